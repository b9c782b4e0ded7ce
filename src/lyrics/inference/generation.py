"""The one generation layer: from encoded conversations and their images to answers.

Every surface answers through `Generator`: `LyricsPipeline` (and so `lyrics chat`, the server's
dynamic batcher, the web demo) and `lyrics eval`'s `LyricsPredictor`. Each builds `Row`s, its own
way (the pipeline from a chat request and a live refiner; eval from few-shot prompts and a refiner
store), and the generator does the rest the same way for all of them:

1. prompt ids: `encode` renders the turns with the checkpoint's processor (one spatial text per
   `<image>` placeholder, several for few-shot prompts; a system prompt override);
2. inputs: left padding, then the images' visual inputs (`LyricsProcessor.visual_inputs`) in order of
   their placeholders, cast to the dtypes of the modules that read them;
3. one `generate` over rows that share `GenerationSettings.batch_key()`, optionally under
   `torch.autocast`; `max_new_tokens`, stop strings and cancellation apply per row (`RowStopper`), so
   a greedy answer is the same alone or in any batch;
4. each answer cut at the end-of-sequence token and at its first stop string, with its token count
   and finish reason.

Loading (`load_checkpoint`) is shared too: dtype, LoRA merge, quantisation and the refiner recorded
in the checkpoint are resolved in one place.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import StoppingCriteriaList

from lyrics.inference.stopping import RowStopper, cut_at_stop
from lyrics.refiner.record import RefinerRecord
from lyrics.refiner.spatial import Box, box_to_pixels, tagged_boxes

GREEDY_BELOW_TEMPERATURE = 0.01  # sampling at a lower temperature decodes greedily (GenerationSettings)
Turn = dict[str, str]


# --- settings --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GenerationSettings:
    """How to decode one answer (transformers generation).

    Args:
        max_new_tokens: answer length limit in tokens.
        do_sample: sample (with `temperature`, `top_p`) instead of greedy decoding (the paper's choice).
        temperature, top_p: sampling parameters (ignored when greedy). A temperature below
            `GREEDY_BELOW_TEMPERATURE` (0.01) decodes greedily: logits divided by it are scaled 100x or
            more, so sampling would pick the argmax anyway except in near-exact ties, and around 1e-38
            the scaled logits overflow float32 to inf and softmax yields NaN (a crash, not an answer).
        num_beams: beam search width (not with streaming).
        stop: strings that end the answer; the answer is cut before the first one.
    """

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    num_beams: int = 1
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(s for s in self.stop if s))
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.do_sample and not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a positive number when sampling, got {self.temperature}")
        if self.do_sample and self.temperature < GREEDY_BELOW_TEMPERATURE:
            object.__setattr__(self, "do_sample", False)
            object.__setattr__(self, "temperature", 1.0)
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be at least 1, got {self.num_beams}")

    def batch_key(self) -> tuple:
        """Settings that must be equal for rows to share one `generate` call (the rest are per row)."""
        if not self.do_sample:
            return (False, 1.0, 1.0, self.num_beams)
        return (True, float(self.temperature), float(self.top_p), self.num_beams)

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"do_sample": self.do_sample, "num_beams": self.num_beams}
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        else:  # silence the checkpoint's sampling defaults
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs


# --- boxes in answers ------------------------------------------------------------------------------
@dataclass
class AnswerBox:
    """A box the model wrote in its answer: `tag` (from a preceding `<T>..</T>`, if any), the pixel
    xyxy `box` in the input image, and `box_norm` in [0, 1]."""

    tag: str | None
    box: Box
    box_norm: Box

    def to_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "box": [round(v, 2) for v in self.box], "box_norm": [round(v, 4) for v in self.box_norm]}


def answer_boxes(text: str, width: int, height: int, fmt: str = "int1000", style: str = "paper") -> list[AnswerBox]:
    """Every box in an answer, in order, in pixels and normalised; tagged boxes keep their tag."""
    return [AnswerBox(tag, box_to_pixels(box, width, height), box) for tag, box in tagged_boxes(text, fmt, style)]


# --- rows and answers ------------------------------------------------------------------------------
@dataclass
class Row:
    """One prompt ready for `generate`: its token ids, the images of its `<image>` placeholders in
    order with their refiner records, the instruction text beside each image (for an
    instruction-aware MQ-Former), decoding settings, and a `cancelled` event that stops it early."""

    input_ids: list[int]
    images: list[Image.Image] = field(default_factory=list)
    records: list[RefinerRecord] = field(default_factory=list)
    instructions: list[str] = field(default_factory=list)
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    cancelled: threading.Event | None = None


@dataclass
class Answer:
    """A row's answer: `text` (cut at end of sequence and at a stop string, stripped), the
    `completion_tokens` counted up to that point, and `finish_reason` ("stop", "length", "cancelled")."""

    text: str
    completion_tokens: int
    finish_reason: str


# --- the generator ---------------------------------------------------------------------------------
class Generator:
    """A model and its processor, generating for `Row`s (see the module docstring).

    Args:
        model: `LyricsForConditionalGeneration` in eval mode.
        processor: its `LyricsProcessor` (synced with the model's config).
        device: where the model runs.
        autocast: run generation under `torch.autocast` with this dtype (e.g. `torch.bfloat16`: fp32
            weights, bf16 matmuls; about 1.9x faster than fp32 on a CPU with AMX), or None.
    """

    def __init__(self, model, processor, device: str | torch.device = "cpu", autocast: torch.dtype | None = None):
        processor.sync_with(model.config)  # the model's config decides what its visual inputs are
        self.model, self.processor = model, processor
        self.device = torch.device(device)
        self.autocast = autocast
        self.eos_token_id = processor.tokenizer.eos_token_id
        self._lock = threading.Lock()  # one generate at a time: the model is not re-entrant

    # --- prompts ---------------------------------------------------------------------------------
    def processor_for(self, system: str | None):
        """The processor, with `system` replacing its chat template's system prompt."""
        return self.processor.with_system(system)

    def encode(self, turns: list[Turn], records: Sequence[RefinerRecord], system: str | None = None) -> list[int]:
        """Prompt ids of `turns` (ending with a human turn), each `<image>` followed by its record's
        spatial text when the checkpoint was trained with it."""
        spatial = [r.spatial_text for r in records] if records else None
        return self.processor_for(system).encode(turns, spatial, add_generation_prompt=True)[0]

    def instructions(self, turns: list[Turn]) -> list[str]:
        return self.processor.instructions(turns)

    # --- generation ------------------------------------------------------------------------------
    def visual_inputs(self, images: Sequence[Image.Image], records: Sequence[RefinerRecord], instructions: Sequence[str] | None) -> dict[str, torch.Tensor]:
        """Visual inputs of `images` in order, on the model's device, in the dtypes of the modules that read them."""
        visual = self.processor.visual_inputs(images=list(images), records=list(records), instructions=list(instructions) if instructions is not None else None)
        dtypes = {"pixel_values": self.model.image_encoder.vision_model.dtype, "local_features": self.model.mqformer.dtype}
        return {k: v.to(self.device, dtypes.get(k, v.dtype)) for k, v in visual.items()}

    def model_inputs(self, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
        """Left-padded ids and mask, then the rows' images' visual inputs in placeholder order."""
        proc = self.processor
        input_ids, attention_mask = proc.pad([r.input_ids for r in rows], proc.tokenizer.pad_token_id, left=True)
        batch = {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}
        images = [image for r in rows for image in r.images]
        if images:
            records = [record for r in rows for record in r.records]
            instructions = [text for r in rows for text in r.instructions]
            batch.update(self.visual_inputs(images, records, instructions))
        return batch

    def autocast_context(self):
        return torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None)

    @torch.inference_mode()
    def generate(self, rows: Sequence[Row], streamer: Any = None) -> list[Answer]:
        """One `generate` call over rows that share `GenerationSettings.batch_key()`."""
        rows = list(rows)
        keys = {r.settings.batch_key() for r in rows}
        if len(keys) != 1:
            raise ValueError(f"rows of one generate call must share sampling settings, got {sorted(keys)}")
        settings = [r.settings for r in rows]
        stopper = RowStopper([s.max_new_tokens for s in settings], [s.stop for s in settings], [r.cancelled for r in rows], self.decode)
        batch = self.model_inputs(rows)
        with self._lock, self.autocast_context():
            generated = self.model.generate(
                **batch,
                max_new_tokens=max(s.max_new_tokens for s in settings),
                stopping_criteria=StoppingCriteriaList([stopper]),
                streamer=streamer,
                **settings[0].generate_kwargs(),
            )
        return [self.answer(generated[i].tolist(), row.settings, row.cancelled) for i, row in enumerate(rows)]

    def answer(self, ids: list[int], settings: GenerationSettings, cancelled: threading.Event | None = None) -> Answer:
        """Generated ids -> the answer: cut at end of sequence and at the first stop string."""
        ids = ids[: settings.max_new_tokens]
        finish = "length"
        if self.eos_token_id is not None and self.eos_token_id in ids:
            ids, finish = ids[: ids.index(self.eos_token_id) + 1], "stop"
        text, stopped = cut_at_stop(self.decode(ids), settings.stop)
        if stopped:
            finish = "stop"
            while ids and cut_at_stop(self.decode(ids[:-1]), settings.stop)[1]:
                ids = ids[:-1]  # count tokens up to the one that completed the stop string
        elif cancelled is not None and cancelled.is_set():
            finish = "cancelled"
        return Answer(text.strip(), len(ids), finish)

    def decode(self, ids: list[int]) -> str:
        return self.processor.tokenizer.decode(ids, skip_special_tokens=True)


# --- loading ---------------------------------------------------------------------------------------
def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """"bfloat16" -> torch.bfloat16 (None and dtypes pass through); a clear error for other names."""
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r} (use float32, bfloat16 or float16)")
        return getattr(torch, dtype)
    return dtype


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, on its device), its processor, and the config of
    the refiner it was trained with (`lyrics.refiner.provenance.checkpoint_refiner_config`)."""

    model: Any
    processor: Any
    refiner_config: Any


def load_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    merge_lora: bool = True,
    quantize: str = "none",
    refiner: dict[str, Any] | None = None,
    text_model: str | None = None,
    vision_model: str | None = None,
    zero_grounding: bool = False,
) -> Checkpoint:
    """Load a checkpoint written by `LyricsForConditionalGeneration.save_pretrained` (or `lyrics merge`)
    with its processor.

    `merge_lora` folds the LoRA adapter into the LLM (faster decoding, same answers). `quantize`
    ("int8", "nf4": `lyrics.inference.quantize`) stores the LLM's weights in 8 or 4 bits after the
    merge; it is checked against the device before the model loads. `refiner` holds explicit
    `RefinerConfig` fields (`--refiner`); with a recorded refiner they may only move a model or change
    runtime fields, else `RefinerMismatch` (a `ValueError`) names the differences. `zero_grounding`
    (analysis) zeroes the grounding queries' output before the projection
    (`LyricsForConditionalGeneration.query_ablation`)."""
    from lyrics.inference.quantize import check_quantization, quantize_model
    from lyrics.models.conditional_generation import LyricsForConditionalGeneration
    from lyrics.models.processing import LyricsProcessor
    from lyrics.refiner.provenance import checkpoint_refiner_config

    dtype = parse_dtype(dtype)
    if check_quantization(quantize, device) is not None and not merge_lora:
        raise ValueError(f"quantize={quantize!r} merges the LoRA adapter first; it cannot be combined with merge_lora=False")
    model = LyricsForConditionalGeneration.from_pretrained(path, text_model=text_model, vision_model=vision_model, torch_dtype=dtype)
    if zero_grounding:
        model.query_ablation = "zero_grounding"
    refiner_config = checkpoint_refiner_config(model.config, refiner, where=str(path))
    if merge_lora and hasattr(model.language_model, "merge_and_unload"):
        model.language_model = model.language_model.merge_and_unload()
    quantize_model(model, quantize, device=device)
    model.to(device).eval()
    return Checkpoint(model, LyricsProcessor.from_pretrained(path), refiner_config)
