"""Inference surfaces: the Python pipeline, `lyrics chat`, the OpenAI-compatible server and the web demo.

Only the pipeline is imported here; the server (FastAPI) and the web demo (gradio) load on demand.
"""

from lyrics.inference.pipeline import (
    AnswerBox,
    ChatRequest,
    GenerationSettings,
    LyricsPipeline,
    PipelineResult,
    answer_boxes,
    expand_regions,
    region_text,
)

__all__ = [
    "AnswerBox",
    "ChatRequest",
    "GenerationSettings",
    "LyricsPipeline",
    "PipelineResult",
    "answer_boxes",
    "expand_regions",
    "region_text",
]
