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
`region_text` renders a user's pixel box into it and `answer_boxes` parses answers back to pixels.

Batches may mix generation settings: rows with equal sampling settings share one `generate` call,
and per-row `max_new_tokens`, `stop` strings and cancellation are enforced per row by `RowStopper`,
so a greedy answer is the same alone or in any batch (the server's dynamic batching relies on it).

Length: the pipeline class and the request/result types it answers with; stop strings live in
`inference/stopping.py`, streaming in `inference/streaming.py`, box markup in `refiner/spatial.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from transformers import StoppingCriteriaList

from lyrics.inference.limits import InputError, check_aspect_ratio, decode_image
from lyrics.inference.stopping import RowStopper, cut_at_stop

if TYPE_CHECKING:
    from lyrics.inference.streaming import TextStream
from lyrics.refiner.record import RefinedObject, RefinerRecord
from lyrics.refiner.spatial import Box, box_from_pixels, box_to_pixels, region_markup, tagged_boxes

REGION = "<region>"
GREEDY_BELOW_TEMPERATURE = 0.01  # sampling at a lower temperature decodes greedily (GenerationSettings)
MAX_ASPECT_RATIO = 20.0  # long side / short side of an image the pipeline accepts (see LyricsPipeline)
Turn = dict[str, str]


# --- settings and results --------------------------------------------------------------------------
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


@dataclass
class AnswerBox:
    """A box the model wrote in its answer: `tag` (from a preceding `<T>..</T>`, if any), the pixel
    xyxy `box` in the input image, and `box_norm` in [0, 1]."""

    tag: str | None
    box: Box
    box_norm: Box

    def to_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "box": [round(v, 2) for v in self.box], "box_norm": [round(v, 4) for v in self.box_norm]}


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
    """

    text: str
    boxes: list[AnswerBox]
    record: RefinerRecord | None
    conversation: list[Turn]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str

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
    """One row of a batch: an image (or None), the new user prompt, the earlier dialogue, the pixel
    boxes for the prompt's `<region>` placeholders, an optional system prompt, decoding settings, and a
    `cancelled` event that stops the row early (a disconnected client)."""

    image: Image.Image | None
    prompt: str
    history: list[Turn] | None = None
    regions: Sequence[Any] | None = None
    system: str | None = None
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    cancelled: threading.Event | None = None


@dataclass
class Prepared:
    """A request ready for `generate`: its refiner record, the rendered dialogue and the prompt ids."""

    request: ChatRequest
    record: RefinerRecord | None
    conversation: list[Turn]
    input_ids: list[int]


# --- boxes in prompts and answers -----------------------------------------------------------------
def region_text(box: Sequence[float], width: int, height: int, fmt: str = "int1000", tag: str | None = None, style: str = "paper") -> str:
    """A user's pixel xyxy box, checked (an `InputError` for the API), in the prompt markup
    (`lyrics.refiner.spatial.region_markup`)."""
    try:
        values = [float(v) for v in box] if isinstance(box, Sequence) and not isinstance(box, str) else []
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InputError(f"a region must be 4 finite pixel coordinates x1,y1,x2,y2, got {box!r}", param="regions")
    x1, y1, x2, y2 = values
    if x2 <= x1 or y2 <= y1:
        raise InputError(f"region {box!r} is empty: need x1 < x2 and y1 < y2 (pixel xyxy)", param="regions")
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise InputError(f"region {box!r} lies outside the {width}x{height} image", param="regions")
    return region_markup(box_from_pixels(values, width, height), fmt, tag, style)


def expand_regions(prompt: str, regions: Sequence[Any] | None, width: int, height: int, fmt: str = "int1000", style: str = "paper") -> str:
    """Replace each `<region>` in `prompt` by the next region (a pixel box or a `(tag, box)` pair)."""
    regions = list(regions or [])
    count = prompt.count(REGION)
    if count != len(regions):
        raise InputError(f"the prompt has {count} {REGION} placeholder(s) but {len(regions)} region(s) were given", param="regions")
    for region in regions:
        tag, box = (region[0], region[1]) if len(region) == 2 and isinstance(region[0], str) else (None, region)
        prompt = prompt.replace(REGION, region_text(box, width, height, fmt, tag, style), 1)
    return prompt


def answer_boxes(text: str, width: int, height: int, fmt: str = "int1000", style: str = "paper") -> list[AnswerBox]:
    """Every box in an answer, in order, in pixels and normalised; tagged boxes keep their tag."""
    return [AnswerBox(tag, box_to_pixels(box, width, height), box) for tag, box in tagged_boxes(text, fmt, style)]


# --- the pipeline ---------------------------------------------------------------------------------
class LyricsPipeline:
    """Refiner + processor + model, ready to answer.

    Args:
        model: a `LyricsForConditionalGeneration` (eval mode).
        processor: its `LyricsProcessor`.
        refiner: a `VisualRefiner`; `from_pretrained` builds the one the checkpoint was trained with
            (`lyrics.refiner.provenance.checkpoint_refiner_config`).
        device: where the model runs.
        max_image_pixels: images with more pixels are refused (default: the refiner config's limit).
        max_aspect_ratio: images whose long side exceeds this many times the short side are refused
            (`InputError`) before the refiner or the image processor touch them: CLIP-style processors
            resize the short side to the encoder's input size s, so a thin strip would become a
            gigantic array before the centre crop. With the cap, no stage allocates more than s x R*s.
    """

    def __init__(
        self, model, processor, refiner, device: str | torch.device = "cpu", max_image_pixels: int | None = None,
        max_aspect_ratio: float = MAX_ASPECT_RATIO,
    ):  # fmt: skip
        processor.sync_with(model.config)  # the model's config decides what its visual inputs are
        self.model, self.processor, self.refiner = model, processor, refiner
        self.device = torch.device(device)
        refiner_config = model.config.refiner_config
        self.coordinate_format = refiner_config.coordinate_format
        self.spatial_style = refiner_config.spatial_format
        self.max_image_pixels = max_image_pixels or refiner_config.max_image_pixels
        self.max_aspect_ratio = max_aspect_ratio
        self.max_positions = getattr(model.llm.config, "max_position_embeddings", None)
        self.eos_token_id = processor.tokenizer.eos_token_id
        self._lock = threading.Lock()  # one generate at a time: the model is not re-entrant

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
        """Load a checkpoint written by `LyricsForConditionalGeneration.save_pretrained` (or `save_merged`)
        with its processor, and build its refiner: the one recorded in the checkpoint
        (`trained_refiner_config`, the refiner of its training store), else its `refiner_config`.
        `refiner` holds explicit `RefinerConfig` fields (`lyrics chat --refiner`); with a recorded
        refiner they may only move a model or change runtime fields, else `RefinerMismatch` (a
        `ValueError`) names the differences. `merge_lora` folds the LoRA adapter into the LLM (faster
        decoding, same answers). `quantize` ("int8", "nf4": `lyrics.inference.quantize`) stores the
        LLM's weights in 8 or 4 bits after the merge (`lyrics chat/serve --quantize`)."""
        from lyrics.models.conditional_generation import LyricsForConditionalGeneration
        from lyrics.models.processing import LyricsProcessor
        from lyrics.refiner.pipeline import VisualRefiner
        from lyrics.refiner.provenance import checkpoint_refiner_config

        path = Path(path)
        if isinstance(dtype, str):
            if not isinstance(getattr(torch, dtype, None), torch.dtype):
                raise ValueError(f"unknown dtype {dtype!r} (use float32, bfloat16 or float16)")
            dtype = getattr(torch, dtype)
        from lyrics.inference.quantize import check_quantization, quantize_model

        if check_quantization(quantize, device) is not None and not merge_lora:
            raise ValueError(f"quantize={quantize!r} merges the LoRA adapter first; it cannot be combined with merge_lora=False")
        model = LyricsForConditionalGeneration.from_pretrained(path, text_model=text_model, vision_model=vision_model, torch_dtype=dtype)
        refiner_config = checkpoint_refiner_config(model.config, refiner, where=str(path))
        if merge_lora and hasattr(model.language_model, "merge_and_unload"):
            model.language_model = model.language_model.merge_and_unload()
        quantize_model(model, quantize, device=device)
        model.to(device).eval()
        processor = LyricsProcessor.from_pretrained(path)
        return cls(model, processor, VisualRefiner.from_config(refiner_config, device=device), device)

    # --- inputs --------------------------------------------------------------------------------
    def load_image(self, source: Any, what: str = "image") -> Image.Image:
        """A PIL image, a path or encoded bytes -> RGB image under the pixel limit."""
        if source is None or isinstance(source, Image.Image):
            if source is not None and source.width * source.height > self.max_image_pixels:
                raise InputError(f"{what}: {source.width}x{source.height} pixels is more than the limit of {self.max_image_pixels}")
            if source is not None:
                check_aspect_ratio(source.width, source.height, self.max_aspect_ratio, what)
            return source.convert("RGB") if source is not None and source.mode != "RGB" else source
        if isinstance(source, (bytes, bytearray)):
            return decode_image(bytes(source), self.max_image_pixels, what, self.max_aspect_ratio)
        if isinstance(source, (str, Path)):
            from lyrics.refiner.images import load_image

            loaded = load_image(source, self.max_image_pixels)
            if not loaded.ok:
                raise InputError(f"{source}: {loaded.reason}")
            check_aspect_ratio(loaded.image.width, loaded.image.height, self.max_aspect_ratio, str(source))
            return loaded.image
        raise TypeError(f"{what}: expected a PIL image, a path or bytes, got {type(source).__name__}")

    def conversation(self, request: ChatRequest, record: RefinerRecord | None) -> list[Turn]:
        """The dialogue the model sees: history, then the new human turn (regions rendered), with the
        image placeholder in the first human turn when there is an image."""
        token = self.processor.config.image_token
        if not isinstance(request.prompt, str) or not request.prompt.strip():
            raise InputError("the prompt is empty", param="prompt")
        if token in request.prompt:
            raise InputError(f"the prompt may not contain {token!r}: the pipeline places the image itself", param="prompt")
        history = [dict(turn) for turn in (request.history or [])]
        for turn in history:
            if turn.get("from") not in ("human", "user", "gpt", "assistant") or not isinstance(turn.get("value"), str):
                raise InputError(f"history turn {turn!r} needs 'from' (human/gpt) and a text 'value'", param="history")
        prompt = request.prompt
        if request.regions or REGION in prompt:
            if record is None:
                raise InputError("regions refer to an image, but no image was given", param="regions")
            prompt = expand_regions(prompt, request.regions, record.width, record.height, self.coordinate_format, self.spatial_style)
        turns = history + [{"from": "human", "value": prompt}]
        placed = sum(turn["value"].count(token) for turn in turns)
        if record is None and placed:
            raise InputError(f"the history holds {token!r} but no image was given", param="history")
        if record is not None and placed == 0:
            first = next(t for t in turns if t["from"] in ("human", "user"))
            first["value"] = f"{token}\n{first['value']}"
        elif placed > 1:
            raise InputError(f"the conversation holds {placed} images; this model takes one", param="history")
        return turns

    def _processor_for(self, system: str | None):
        if system is None:
            return self.processor
        proc = copy.copy(self.processor)
        proc.config = dataclasses.replace(proc.config, template=dataclasses.replace(proc.config.template, system=system))
        return proc

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
            if i in refused:
                out.append(refused[i])
                continue
            try:
                conv = self.conversation(req, rec)
                proc = self._processor_for(req.system)
                try:
                    ids, _ = proc.encode(conv, rec.spatial_text if rec is not None else None, add_generation_prompt=True)
                except ValueError as exc:
                    raise InputError(str(exc), param="messages") from None
                limit = proc.config.max_length
                if len(ids) >= limit:
                    raise InputError(f"the prompt is {len(ids)}+ tokens, at or over the processor's max_length={limit}", param="messages", code="context_length_exceeded")
                if self.max_positions and len(ids) + req.settings.max_new_tokens > self.max_positions:
                    raise InputError(
                        f"prompt ({len(ids)} tokens) + max_new_tokens ({req.settings.max_new_tokens}) exceeds the "
                        f"model's {self.max_positions} positions", param="max_tokens", code="context_length_exceeded",
                    )  # fmt: skip
                out.append(Prepared(req, rec, conv, ids))
            except InputError as exc:
                out.append(exc)
        return out

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

    def _model_inputs(self, prepared: Sequence["Prepared"]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = self.processor.pad([p.input_ids for p in prepared], self.processor.tokenizer.pad_token_id, left=True)
        batch = {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}
        with_image = [p for p in prepared if p.record is not None]
        if with_image:
            visual = self.processor.visual_inputs(
                images=[p.request.image for p in with_image],
                records=[p.record for p in with_image],
                instructions=[self.processor.instructions(p.conversation)[-1] for p in with_image],
            )
            dtypes = {"pixel_values": self.model.image_encoder.vision_model.dtype, "local_features": self.model.mqformer.dtype}
            batch.update({k: v.to(self.device, dtypes.get(k, v.dtype)) for k, v in visual.items()})
        return batch

    def decode(self, ids: list[int]) -> str:
        return self.processor.tokenizer.decode(ids, skip_special_tokens=True)

    @torch.inference_mode()
    def generate(self, prepared: Sequence["Prepared"], streamer: Any = None) -> list[PipelineResult]:
        """One `generate` call over prepared rows that share `GenerationSettings.batch_key()`;
        `max_new_tokens`, `stop` and cancellation apply per row."""
        prepared = list(prepared)
        keys = {p.request.settings.batch_key() for p in prepared}
        if len(keys) != 1:
            raise ValueError(f"rows of one generate call must share sampling settings, got {sorted(keys)}")
        settings = [p.request.settings for p in prepared]
        stopper = RowStopper(
            [s.max_new_tokens for s in settings], [s.stop for s in settings], [p.request.cancelled for p in prepared], self.decode
        )
        batch = self._model_inputs(prepared)
        with self._lock:
            generated = self.model.generate(
                **batch,
                max_new_tokens=max(s.max_new_tokens for s in settings),
                stopping_criteria=StoppingCriteriaList([stopper]),
                streamer=streamer,
                **settings[0].generate_kwargs(),
            )
        return [self._result(p, generated[row].tolist()) for row, p in enumerate(prepared)]

    def _result(self, prepared: "Prepared", ids: list[int]) -> PipelineResult:
        settings, rec = prepared.request.settings, prepared.record
        ids = ids[: settings.max_new_tokens]
        finish = "length"
        if self.eos_token_id is not None and self.eos_token_id in ids:
            ids, finish = ids[: ids.index(self.eos_token_id) + 1], "stop"
        text, stopped = cut_at_stop(self.decode(ids), settings.stop)
        if stopped:
            finish = "stop"
            while ids and cut_at_stop(self.decode(ids[:-1]), settings.stop)[1]:
                ids = ids[:-1]  # count tokens up to the one that completed the stop string
        elif prepared.request.cancelled is not None and prepared.request.cancelled.is_set():
            finish = "cancelled"
        text = text.strip()
        boxes = answer_boxes(text, rec.width, rec.height, self.coordinate_format, self.spatial_style) if rec is not None else []
        return PipelineResult(
            text=text, boxes=boxes, record=rec, conversation=prepared.conversation + [{"from": "gpt", "value": text}],
            prompt_tokens=len(prepared.input_ids), completion_tokens=len(ids), finish_reason=finish,
        )  # fmt: skip

    # --- public entry points -------------------------------------------------------------------------
    def _requests(self, images, prompts, history, regions, system, generation) -> tuple[list[ChatRequest], bool]:
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
            ChatRequest(self.load_image(image, f"image {i}"), prompt, hist, reg, system, settings)
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
        system: str | None = None,
        **generation: Any,
    ) -> PipelineResult | list[PipelineResult]:
        """Answer one prompt (`images` an image or None, `prompts` a str) or a batch (lists).

        Args:
            images: PIL image, path or encoded bytes (or None for text only); a list for a batch.
            prompts: the user's question; `<region>` placeholders take `regions` (pixel xyxy boxes
                or `(tag, box)` pairs) in the paper's box markup.
            history: earlier turns (`PipelineResult.conversation`) for multi-turn dialogue; per row for a batch.
            system: replaces the chat template's system prompt.
            **generation: `GenerationSettings` fields (max_new_tokens, do_sample, temperature, top_p,
                num_beams, stop).
        """
        requests, single = self._requests(images, prompts, history, regions, system, generation)
        results = self.run(requests)
        return results[0] if single else results

    def stream(
        self,
        image: Any,
        prompt: str,
        *,
        history: list[Turn] | None = None,
        regions: Sequence[Any] | None = None,
        system: str | None = None,
        **generation: Any,
    ) -> "TextStream":
        """Stream one answer: iterate the returned `TextStream` for text pieces as they are decoded
        (transformers' `TextIteratorStreamer`, generation in a thread); `.result` then holds the
        `PipelineResult`."""
        from transformers import TextIteratorStreamer

        requests, _ = self._requests(image, prompt, history, regions, system, generation)
        requests[0].cancelled = threading.Event()  # set when the consumer stops iterating early
        if requests[0].settings.num_beams > 1:
            raise ValueError("streaming works with greedy decoding or sampling, not beam search")
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        from lyrics.inference.streaming import TextStream

        return TextStream(self, requests[0], streamer)
