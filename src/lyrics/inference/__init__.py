"""Inference surfaces: the Python pipeline, `lyrics chat`, the OpenAI-compatible server and the web demo.

Only the pipeline and what it is built from are imported here; the server (FastAPI) and the web demo
(gradio) load on demand. Layers, bottom up: `inputs` (request errors, image decoding), `regions`
(boxes in questions), `generation` (the one generation path, also under `lyrics eval`), `pipeline`
(chat requests with a live refiner), then `chat`, `server` + `batching`, `webui`.
"""

from lyrics.inference.generation import AnswerBox, GenerationSettings, answer_boxes
from lyrics.inference.inputs import InputError
from lyrics.inference.pipeline import ChatRequest, LyricsPipeline, PipelineResult
from lyrics.inference.regions import REGION_FORMATS, expand_regions, region_text

__all__ = [
    "REGION_FORMATS",
    "AnswerBox",
    "ChatRequest",
    "GenerationSettings",
    "InputError",
    "LyricsPipeline",
    "PipelineResult",
    "answer_boxes",
    "expand_regions",
    "region_text",
]
