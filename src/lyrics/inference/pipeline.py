"""Lyrics inference in Python: image -> live visual refiner -> Lyrics model -> grounded answer.

    pipe = LyricsPipeline.from_pretrained("runs/stage2/final")
    result = pipe(image, "What is in the picture?")
    result.text, result.boxes, result.objects          # answer, its boxes in pixels, refiner objects
    follow_up = pipe(image, "Where is it?", history=result.conversation)
    pipe(image, "What colour is the object <region>?", regions=[(10, 10, 60, 60)])   # referential dialogue
    for piece in pipe.stream(image, "Describe the image."): print(piece, end="")
    pipe([img1, img2], ["q1", "q2"])                   # one refiner batch + one generate call

The refiner (tagger -> detector -> segmenter, paper section 3.1) runs live on every image and gives
the `RefinerRecord` the model was trained with (the refiner recorded in the checkpoint, see
`lyrics.refiner.provenance`): local features for the grounding queries and the
textual spatial representation (in the prompt when the checkpoint was trained with
`spatial_text_in_prompt`). Boxes in prompts and answers use the paper's markup
`<T>tag</T><Bbox>(x1,y1),(x2,y2)</Box>` in the checkpoint's `refiner_config.coordinate_format`;
regions in questions follow `inference/regions.py` and answers' boxes are parsed back to pixels.

The pipeline owns what a chat request needs before generation (the image, checked; the live refiner;
the dialogue, validated, with its regions rendered); generation itself (prompt ids, padding, visual
inputs, `generate`, stop strings) is `inference/generation.py`'s `Generator`, the same one under
`lyrics eval`. Batches may mix generation settings: rows with equal sampling settings share one
`generate` call, and per-row limits hold, so a greedy answer is the same alone or in any batch (the
server's dynamic batching relies on it). Streaming is `inference/streaming.py`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from lyrics.inference.generation import (
    AnswerBox,
    GenerationSettings,
    Generator,
    Row,
    Turn,
    answer_boxes,
    load_checkpoint,
)
from lyrics.inference.inputs import MAX_ASPECT_RATIO, InputError, check_aspect_ratio, open_image
from lyrics.inference.regions import REGION, expand_regions, split_region, to_pixels, with_regions
from lyrics.inference.streaming import TextStream
from lyrics.refiner.record import RefinedObject, RefinerRecord

__all__ = ["AnswerBox", "ChatRequest", "GenerationSettings", "LyricsPipeline", "PipelineResult", "Prepared", "answer_boxes"]


# --- requests and results ---------------------------------------------------------------------------
@dataclass
class PipelineResult:
    """One answer.

    Args:
        text: the answer (cut at a stop string).
        boxes: the boxes parsed from `text`, in pixels of the input image and normalised.
        record: the refiner's `RefinerRecord` for the image (None without an image); `objects`,
            `tags` and `spatial_text` are its fields.
        conversation: the whole dialogue including this answer, to pass back as `history=`.
        prompt_tokens, completion_tokens: token counts (completion counted up to the stop).
        finish_reason: "stop" (end of sequence or a stop string) or "length" (`max_new_tokens`).
        regions: the pixel boxes the question asked about, in order.
    """

    text: str
    boxes: list[AnswerBox]
    record: RefinerRecord | None
    conversation: list[Turn]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    regions: list[tuple[float, float, float, float]] = field(default_factory=list)

    @property
    def objects(self) -> list[RefinedObject]:
        return self.record.objects if self.record is not None else []

    @property
    def tags(self) -> list[str]:
        return self.record.tags if self.record is not None else []

    @property
    def spatial_text(self) -> str:
        return self.record.spatial_text if self.record is not None else ""

    @property
    def image_size(self) -> tuple[int, int] | None:
        return (self.record.width, self.record.height) if self.record is not None else None


@dataclass
class ChatRequest:
    """One row of a batch: an image (or None), the new user prompt, the earlier dialogue, the boxes
    for the prompt's `<region>` placeholders (in `region_format`, see `inference/regions.py`), an
    optional system prompt, decoding settings, and a `cancelled` event that stops the row early (a
    disconnected client)."""

    image: Image.Image | None
    prompt: str
    history: list[Turn] | None = None
    regions: Sequence[Any] | None = None
    system: str | None = None
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    cancelled: threading.Event | None = None
    region_format: str = "pixels"


@dataclass
class Prepared:
    """A request ready for `generate`: its refiner record, the rendered dialogue and its `Row`."""

    request: ChatRequest
    record: RefinerRecord | None
    conversation: list[Turn]
    row: Row

    @property
    def input_ids(self) -> list[int]:
        return self.row.input_ids


def build_conversation(request: ChatRequest, image_size: tuple[int, int] | None, image_token: str, coordinate_format: str, spatial_style: str) -> list[Turn]:
    """The dialogue the model sees: history, then the new human turn (regions rendered for an image
    of `image_size`, (width, height), None without an image), with the image placeholder in the first
    human turn when there is an image. `LyricsPipeline` and the vLLM plugin's renderer both call it."""
    token = image_token
    if not isinstance(request.prompt, str) or not request.prompt.strip():
        raise InputError("the prompt is empty", param="prompt")
    if token in request.prompt:
        raise InputError(f"the prompt may not contain {token!r}: the pipeline places the image itself", param="prompt")
    history = [dict(turn) for turn in (request.history or [])]
    for turn in history:
        if turn.get("from") not in ("human", "user", "gpt", "assistant") or not isinstance(turn.get("value"), str):
            raise InputError(f"history turn {turn!r} needs 'from' (human/gpt) and a text 'value'", param="history")
    prompt = with_regions(request.prompt, list(request.regions or []))
    if request.regions or REGION in prompt:
        if image_size is None:
            raise InputError("regions refer to an image, but no image was given", param="regions")
        width, height = image_size
        prompt = expand_regions(prompt, request.regions, width, height, coordinate_format, spatial_style, request.region_format)
    turns = history + [{"from": "human", "value": prompt}]
    placed = sum(turn["value"].count(token) for turn in turns)
    if image_size is None and placed:
        raise InputError(f"the history holds {token!r} but no image was given", param="history")
    if image_size is not None and placed == 0:
        first = next(t for t in turns if t["from"] in ("human", "user"))
        first["value"] = f"{token}\n{first['value']}"
    elif placed > 1:
        raise InputError(f"the conversation holds {placed} images; this model takes one", param="history")
    return turns


# --- the pipeline ---------------------------------------------------------------------------------
class LyricsPipeline:
    """Refiner + generator, ready to answer chat requests.

    Args:
        model: a `LyricsForConditionalGeneration` (eval mode).
        processor: its `LyricsProcessor`.
        refiner: a `VisualRefiner`; `from_pretrained` builds the one the checkpoint was trained with
            (`lyrics.refiner.provenance.checkpoint_refiner_config`).
        device: where the model runs.
        max_image_pixels: images with more pixels are refused (default: the refiner config's limit).
        max_aspect_ratio: images whose long side exceeds this many times the short side are refused
            (`InputError`) before the refiner or the image processor touch them (see
            `lyrics.inference.inputs`: no stage then allocates more than s x R*s for input size s).
    """

    def __init__(
        self, model, processor, refiner, device: str | torch.device = "cpu", max_image_pixels: int | None = None,
        max_aspect_ratio: float = MAX_ASPECT_RATIO,
    ):  # fmt: skip
        self.generator = Generator(model, processor, device)
        self.model, self.processor, self.refiner = model, processor, refiner
        self.device = self.generator.device
        refiner_config = model.config.refiner_config
        self.coordinate_format = refiner_config.coordinate_format
        self.spatial_style = refiner_config.spatial_format
        self.max_image_pixels = max_image_pixels or refiner_config.max_image_pixels
        self.max_aspect_ratio = max_aspect_ratio
        self.max_positions = getattr(model.llm.config, "max_position_embeddings", None)
        self.eos_token_id = self.generator.eos_token_id

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        merge_lora: bool = True,
        text_model: str | None = None,
        vision_model: str | None = None,
        refiner: dict[str, Any] | None = None,
        quantize: str = "none",
    ) -> "LyricsPipeline":
        """Load a checkpoint with its processor (`lyrics.inference.generation.load_checkpoint`: dtype,
        LoRA merge, `quantize`, explicit `refiner` fields) and build the refiner it was trained with:
        the one recorded in the checkpoint (`trained_refiner_config`, the refiner of its training
        store), else its `refiner_config`."""
        from lyrics.refiner.pipeline import VisualRefiner

        loaded = load_checkpoint(path, device, dtype, merge_lora, quantize, refiner, text_model, vision_model)
        return cls(loaded.model, loaded.processor, VisualRefiner.from_config(loaded.refiner_config, device=device), device)

    # --- inputs --------------------------------------------------------------------------------
    def load_image(self, source: Any, what: str = "image") -> Image.Image | None:
        """A PIL image, a path or encoded bytes -> RGB image within the pixel and aspect-ratio limits."""
        return open_image(source, self.max_image_pixels, self.max_aspect_ratio, what)

    def conversation(self, request: ChatRequest, record: RefinerRecord | None) -> list[Turn]:
        """The dialogue the model sees (`build_conversation`) for `request` with its image's record."""
        size = (record.width, record.height) if record is not None else None
        return build_conversation(request, size, self.processor.config.image_token, self.coordinate_format, self.spatial_style)

    # --- running ---------------------------------------------------------------------------------
    def refine(self, images: Sequence[Image.Image | None]) -> list[RefinerRecord | None]:
        """One refiner batch over the images that are present."""
        present = [i for i, image in enumerate(images) if image is not None]
        records: list[RefinerRecord | None] = [None] * len(images)
        if present:
            for i, record in zip(present, self.refiner([images[i] for i in present], [str(i) for i in present])):
                records[i] = record
        return records

    def prepare(self, requests: Sequence[ChatRequest]) -> list["Prepared | InputError"]:
        """Refine all images in one batch, then build and tokenise each row's prompt. A row with bad
        input yields its `InputError` instead of failing the others (the server answers it alone).
        Images beyond `max_aspect_ratio` are refused before the refiner sees them."""
        refused: dict[int, InputError] = {}
        for i, req in enumerate(requests):
            if req.image is not None:
                try:
                    check_aspect_ratio(req.image.width, req.image.height, self.max_aspect_ratio)
                except InputError as exc:
                    refused[i] = exc
        records = self.refine([None if i in refused else req.image for i, req in enumerate(requests)])
        out: list[Prepared | InputError] = []
        for i, (req, rec) in enumerate(zip(requests, records)):
            try:
                if i in refused:
                    raise refused[i]
                out.append(self._prepare(req, rec))
            except InputError as exc:
                out.append(exc)
        return out

    def _prepare(self, req: ChatRequest, rec: RefinerRecord | None) -> Prepared:
        conv = self.conversation(req, rec)
        records = [rec] if rec is not None else []
        try:
            ids = self.generator.encode(conv, records, req.system)
        except ValueError as exc:
            raise InputError(str(exc), param="messages") from None
        limit = self.processor.config.max_length
        if len(ids) >= limit:
            raise InputError(f"the prompt is {len(ids)}+ tokens, at or over the processor's max_length={limit}", param="messages", code="context_length_exceeded")
        if self.max_positions and len(ids) + req.settings.max_new_tokens > self.max_positions:
            raise InputError(
                f"prompt ({len(ids)} tokens) + max_new_tokens ({req.settings.max_new_tokens}) exceeds the "
                f"model's {self.max_positions} positions", param="max_tokens", code="context_length_exceeded",
            )  # fmt: skip
        images = [req.image] if rec is not None else []
        instructions = self.generator.instructions(conv)[-1:] if rec is not None else []
        return Prepared(req, rec, conv, Row(ids, images, records, instructions, req.settings, req.cancelled))

    def run(self, requests: Sequence[ChatRequest], streamer: Any = None) -> list[PipelineResult]:
        """Answer a batch: one refiner batch, then one `generate` per group of equal sampling settings.
        Raises the first row's `InputError`. `streamer` needs a single sampling group."""
        prepared = self.prepare(list(requests))
        for item in prepared:
            if isinstance(item, InputError):
                raise item
        groups: dict[tuple, list[int]] = {}
        for i, item in enumerate(prepared):
            groups.setdefault(item.request.settings.batch_key(), []).append(i)
        if streamer is not None and len(groups) > 1:
            raise ValueError("a streamed batch must share one set of sampling settings")
        results: list[PipelineResult | None] = [None] * len(prepared)
        for rows in groups.values():
            for i, out in zip(rows, self.generate([prepared[i] for i in rows], streamer)):
                results[i] = out
        return results  # type: ignore[return-value]

    def decode(self, ids: list[int]) -> str:
        return self.generator.decode(ids)

    def generate(self, prepared: Sequence["Prepared"], streamer: Any = None) -> list[PipelineResult]:
        """One `generate` call over prepared rows that share `GenerationSettings.batch_key()`;
        `max_new_tokens`, `stop` and cancellation apply per row."""
        prepared = list(prepared)
        answers = self.generator.generate([p.row for p in prepared], streamer)
        return [self._result(p, answer) for p, answer in zip(prepared, answers)]

    def _result(self, prepared: "Prepared", answer) -> PipelineResult:
        rec, req = prepared.record, prepared.request
        boxes = answer_boxes(answer.text, rec.width, rec.height, self.coordinate_format, self.spatial_style) if rec is not None else []
        regions = [to_pixels(split_region(r)[1], rec.width, rec.height, req.region_format) for r in req.regions or []] if rec is not None else []
        return PipelineResult(
            text=answer.text, boxes=boxes, record=rec, conversation=prepared.conversation + [{"from": "gpt", "value": answer.text}],
            prompt_tokens=len(prepared.input_ids), completion_tokens=answer.completion_tokens, finish_reason=answer.finish_reason,
            regions=regions,
        )  # fmt: skip

    # --- public entry points -------------------------------------------------------------------------
    def _requests(self, images, prompts, history, regions, system, generation, region_format="pixels") -> tuple[list[ChatRequest], bool]:
        settings = GenerationSettings(**generation)
        single = isinstance(prompts, str)
        if single:
            images, prompts, history, regions = [images], [prompts], [history], [regions]
        else:
            prompts = list(prompts)
            images = list(images) if isinstance(images, (list, tuple)) else [images] * len(prompts)
            history = list(history) if history is not None else [None] * len(prompts)
            regions = list(regions) if regions is not None else [None] * len(prompts)
            if not len(images) == len(prompts) == len(history) == len(regions):
                raise ValueError(f"got {len(images)} images, {len(prompts)} prompts, {len(history)} histories, {len(regions)} region lists")
        requests = [
            ChatRequest(self.load_image(image, f"image {i}"), prompt, hist, reg, system, settings, region_format=region_format)
            for i, (image, prompt, hist, reg) in enumerate(zip(images, prompts, history, regions))
        ]
        return requests, single

    def __call__(
        self,
        images: Any,
        prompts: str | Sequence[str],
        *,
        history: list[Turn] | Sequence[list[Turn] | None] | None = None,
        regions: Sequence[Any] | None = None,
        region_format: str = "pixels",
        system: str | None = None,
        **generation: Any,
    ) -> PipelineResult | list[PipelineResult]:
        """Answer one prompt (`images` an image or None, `prompts` a str) or a batch (lists).

        Args:
            images: PIL image, path or encoded bytes (or None for text only); a list for a batch.
            prompts: the user's question; `<region>` placeholders take `regions` (xyxy boxes or
                `(tag, box)` pairs; per row for a batch) in the paper's box markup.
            region_format: "pixels" (default), "0-1" or "0-1000" (`lyrics.inference.regions`).
            history: earlier turns (`PipelineResult.conversation`) for multi-turn dialogue; per row for a batch.
            system: replaces the chat template's system prompt.
            **generation: `GenerationSettings` fields (max_new_tokens, do_sample, temperature, top_p,
                num_beams, stop).
        """
        requests, single = self._requests(images, prompts, history, regions, system, generation, region_format)
        results = self.run(requests)
        return results[0] if single else results

    def stream(
        self,
        image: Any,
        prompt: str,
        *,
        history: list[Turn] | None = None,
        regions: Sequence[Any] | None = None,
        region_format: str = "pixels",
        system: str | None = None,
        **generation: Any,
    ) -> "TextStream":
        """Stream one answer: iterate the returned `TextStream` for text pieces as they are decoded
        (transformers' `TextIteratorStreamer`, generation in a thread); `.result` then holds the
        `PipelineResult`."""
        from transformers import TextIteratorStreamer

        requests, _ = self._requests(image, prompt, history, regions, system, generation, region_format)
        requests[0].cancelled = threading.Event()  # set when the consumer stops iterating early
        if requests[0].settings.num_beams > 1:
            raise ValueError("streaming works with greedy decoding or sampling, not beam search")
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        return TextStream(lambda: self.run(requests, streamer=streamer)[0], requests[0], streamer)

