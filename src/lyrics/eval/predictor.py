"""Batched, multi-image greedy generation for evaluation.

The runner talks to any object with `predict(prompts) -> predictions` and a `coordinate_format`
(the `Predictor` protocol), so the harness can be tested with a scripted predictor and the model is
one implementation. `LyricsPredictor` runs a saved Lyrics checkpoint:

1. every distinct image of the batch is decoded once (`lyrics.refiner.images.load_image`: EXIF
   rotation, RGB; an unreadable image fails only the prompts that use it, with the reason);
2. the visual refiner gives each image its `RefinerRecord`: live (`VisualRefiner` built from the
   refiner recorded in the checkpoint, else its `refiner_config`; one call for the whole batch), or
   read from a feature store that `lyrics refine` wrote with that refiner (`--refiner-store`),
   looked up by the image's path relative to the image root (then by shorter path suffixes, down to
   the file name);
3. each prompt becomes a `Row` of the generation layer that every inference surface shares
   (`lyrics.inference.generation.Generator`): its turns encoded by the checkpoint's processor (several
   `<image>` placeholders for few-shot prompts, each followed by its own image's spatial text), its
   images and records in placeholder order, which is the order `LyricsForConditionalGeneration.embed`
   fills them in;
4. one greedy `generate` per group of prompts sharing `max_new_tokens` (the paper: "open-ended
   approach with a greedy decoding strategy"); with `max_batch`, a group is cut into batches of
   prompts of similar length (sorted by their text and spatial text), so that a left-padded batch is
   little padding; answers are cut at the end-of-sequence token and at the prompt's stop strings,
   as the pipeline cuts them (the same `Generator.answer`).
   With `share_prefix`, prompts about the same images are answered from one encoding of their
   common token prefix (`lyrics.inference.prefix_cache`; the same greedy answers, 1.9-2.6x the
   questions per second on the toy world's test split in fp32, `bench/eval.py`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Union

import torch
from PIL import Image

from lyrics.inference.generation import GenerationSettings, Generator, Row, load_checkpoint
from lyrics.refiner.record import RefinerRecord

ImageInput = Union[str, os.PathLike, Image.Image]


@dataclass
class Prompt:
    """One generation request.

    Args:
        turns: LLaVA-style turns (`{"from": "human"|"gpt", "value": str}`) ending with a human turn;
            each `<image>` placeholder takes the next entry of `images`.
        images: image files (or PIL images) in order of their placeholders.
        max_new_tokens: answer length limit.
        stop: strings that end the answer (it is cut before the first one).
        key: the sample id, for logs and scripted predictors (models ignore it).
    """

    turns: list[dict[str, str]]
    images: list[ImageInput]
    max_new_tokens: int = 32
    stop: tuple[str, ...] = ()
    key: str = ""


@dataclass
class Prediction:
    """A generated answer, or the reason there is none (`error`, with `text` empty)."""

    text: str
    error: str | None = None


class Predictor(Protocol):
    """What the runner needs from a model: batched prediction and the box text convention."""

    coordinate_format: str

    def predict(self, prompts: Sequence[Prompt]) -> list[Prediction]: ...


class RefinerStoreMiss(LookupError):
    """An image of the benchmark is not in the `--refiner-store` (refine that folder first)."""


class LyricsPredictor:
    """A Lyrics checkpoint as a `Predictor`.

    Args:
        model: `LyricsForConditionalGeneration` in eval mode.
        processor: its `LyricsProcessor`.
        refiner: a `VisualRefiner` (live refining), or None when `store` is given.
        store: a `FeatureStore` from `lyrics.refiner.store.open_store`.
        store_roots: folders image paths are made relative to for store look-ups.
        device: where the model runs.
        store_key: optional `path -> store id`, tried first (datasets that reach one image through
            several paths, like the toy world's official-layout aliases).
        autocast: run generation under `torch.autocast` with this dtype (e.g. `torch.bfloat16`: fp32
            weights, bf16 matmuls; on a CPU with AMX it generates about 1.9x faster than fp32).
        max_batch: the most prompts in one `generate`; a larger call is cut into length-sorted
            batches (None: one batch per call).
        share_prefix: answer the prompts of one call that show the same images from one encoding
            of their shared prefix (plain greedy decoding only: refused silently, falling back to
            `generate`, for instruction-aware models and generation configs with logit processors).
    """

    def __init__(self, model, processor, refiner=None, store=None, store_roots: Sequence[str | os.PathLike] = (), device: str | torch.device = "cpu", store_key: Callable[[Path], str] | None = None, autocast: torch.dtype | None = None, max_batch: int | None = None, share_prefix: bool = False):
        if refiner is None and store is None:
            raise ValueError("LyricsPredictor needs a refiner or a refiner store")
        self.generator = Generator(model, processor, device, autocast)
        self.model, self.processor, self.refiner, self.store = model, processor, refiner, store
        self.store_roots = [Path(r) for r in store_roots]
        self.store_key = store_key
        self.device = self.generator.device
        self.max_batch = max_batch
        from lyrics.inference.prefix_cache import shareable

        self.share_prefix = share_prefix and not model.config.instruction_aware and shareable(model.language_model)
        config = model.config.refiner_config
        self.coordinate_format = config.coordinate_format
        self.feature_dim = config.local_feature_size
        self.max_image_pixels = config.max_image_pixels

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        refiner_store: str | os.PathLike | None = None,
        store_roots: Sequence[str | os.PathLike] = (),
        max_length: int | None = None,
        autocast: torch.dtype | None = None,
        max_batch: int | None = None,
        refiner: dict[str, Any] | None = None,
        share_prefix: bool = False,
        zero_grounding: bool = False,
        quantize: str = "none",
    ) -> "LyricsPredictor":
        """Load a checkpoint (`save_pretrained` or `lyrics merge` output) with its processor; LoRA is
        merged into the LLM (same answers, faster decoding). `max_length` raises the processor's
        prompt limit (K-shot prompts hold K + 1 images).

        `zero_grounding` (analysis, `lyrics eval --zero-grounding`): answer with the grounding queries'
        MQ-Former output zeroed before the language projection
        (`LyricsForConditionalGeneration.query_ablation`), on every generation path, shared prefix
        included; a checkpoint without grounding queries is refused (ValueError).

        `quantize` ("int8", "nf4"; `lyrics eval --quantize`): the LLM's weights in 8 or 4 bits after
        the LoRA merge (`lyrics.inference.quantize`).

        The live refiner is the one recorded in the checkpoint (its training store's refiner), else
        its `refiner_config`; `refiner` holds explicit fields (`lyrics eval --refiner`), refused when
        they contradict the record. A `refiner_store` must come from that same refiner
        (`lyrics.refiner.provenance`; `RefinerMismatch` otherwise)."""
        from lyrics.refiner.provenance import check_store

        loaded = load_checkpoint(path, device, dtype, quantize=quantize, refiner=refiner, zero_grounding=zero_grounding)
        model, processor, refiner_config = loaded.model, loaded.processor, loaded.refiner_config
        if max_length is not None:
            processor.config = dataclasses.replace(processor.config, max_length=max_length)
        live = store = None
        if refiner_store is not None:
            from lyrics.refiner.store import open_store

            store = open_store(refiner_store)
            if store.feature_dim != model.config.refiner_config.local_feature_size:
                raise ValueError(
                    f"refiner store {refiner_store} holds {store.feature_dim}-d local features, the checkpoint "
                    f"expects {model.config.refiner_config.local_feature_size}"
                )
            check_store(model.config, store, where=str(path))
        else:
            from lyrics.refiner.pipeline import VisualRefiner

            live = VisualRefiner.from_config(refiner_config, device=device)
        return cls(model, processor, live, store, store_roots, device, autocast=autocast, max_batch=max_batch, share_prefix=share_prefix)

    @property
    def autocast(self) -> torch.dtype | None:
        """The autocast dtype generation runs under (the generator's)."""
        return self.generator.autocast

    # --- images and refiner records --------------------------------------------------------------
    def _load(self, source: ImageInput) -> tuple[Image.Image | None, str | None]:
        if isinstance(source, Image.Image):
            return (source if source.mode == "RGB" else source.convert("RGB")), None
        from lyrics.refiner.images import load_image

        loaded = load_image(source, self.max_image_pixels)
        return loaded.image, (None if loaded.ok else f"{source}: {loaded.reason}")

    def _store_record(self, path: Path) -> RefinerRecord:
        keys = [self.store_key(path)] if self.store_key is not None else []
        keys += [Path(os.path.relpath(path, root)).as_posix() for root in self.store_roots]
        keys += [Path(*path.parts[-n:]).as_posix() for n in range(min(len(path.parts), 4), 0, -1)]
        for key in dict.fromkeys(keys):
            if key in self.store:
                return self.store.get(key)
        raise RefinerStoreMiss(f"{path}: not in the refiner store {self.store.layout.root} (tried ids {list(dict.fromkeys(keys))[:4]})")

    def _records(self, keys: list[Any], images: dict[Any, Image.Image]) -> dict[Any, RefinerRecord]:
        """Records of the decoded images: file images from the store when there is one, the rest
        (PIL images have no path to look up) from the live refiner in one batch."""
        out: dict[Any, RefinerRecord] = {}
        live = keys
        if self.store is not None:
            out = {k: self._store_record(Path(k)) for k in keys if isinstance(k, str)}
            live = [k for k in keys if not isinstance(k, str)]
        if live:
            if self.refiner is None:
                raise ValueError("in-memory images need a live refiner; this predictor only reads a refiner store")
            out.update(zip(live, self.refiner([images[k] for k in live], [str(i) for i in range(len(live))])))
        return out

    @torch.inference_mode()
    def predict(self, prompts: Sequence[Prompt]) -> list[Prediction]:
        """Answers for `prompts`, in order (see the module docstring)."""
        keyed: dict[Any, ImageInput] = {}
        prompt_keys: list[list[Any]] = []
        for prompt in prompts:
            ks = []
            for image in prompt.images:
                key = id(image) if isinstance(image, Image.Image) else str(Path(image))
                keyed.setdefault(key, image)
                ks.append(key)
            prompt_keys.append(ks)
        loaded, failed = {}, {}
        for key, source in keyed.items():
            image, error = self._load(source)
            if image is None:
                failed[key] = error
            else:
                loaded[key] = image
        records = self._records(list(loaded), loaded)

        results: list[Prediction | None] = [None] * len(prompts)
        groups: dict[int, list[int]] = {}
        for i, (prompt, ks) in enumerate(zip(prompts, prompt_keys)):
            bad = [failed[k] for k in ks if k in failed]
            if bad:
                results[i] = Prediction("", bad[0])
            else:
                groups.setdefault(prompt.max_new_tokens, []).append(i)
        for max_new_tokens, rows in groups.items():
            if self.share_prefix:
                rows = self._predict_shared(rows, prompts, prompt_keys, loaded, records, max_new_tokens, results)
                if not rows:
                    continue
            for chunk in self._batches(rows, prompts, prompt_keys, records):
                texts = self._generate([prompts[i] for i in chunk], [prompt_keys[i] for i in chunk], loaded, records, max_new_tokens)
                for i, text in zip(chunk, texts):
                    results[i] = Prediction(text)
        return results  # type: ignore[return-value]

    def _batches(self, rows: list[int], prompts, keys, records) -> list[list[int]]:
        """`rows` in batches of at most `max_batch`, longest prompts first (characters of the turns and
        of the spatial text when it goes into the prompt: a cheap stand-in for the token count)."""
        if self.max_batch is None or len(rows) <= self.max_batch:
            return [rows]
        spatial = self.processor.config.spatial_text_in_prompt

        def size(i: int) -> int:
            text = sum(len(t.get("value", "")) for t in prompts[i].turns)
            return text + (sum(len(records[k].spatial_text or "") for k in keys[i]) if spatial else 0)

        ordered = sorted(rows, key=size, reverse=True)
        return [ordered[start : start + self.max_batch] for start in range(0, len(ordered), self.max_batch)]

    def _encode(self, prompt: Prompt, keys: list[Any], records) -> list[int]:
        return self.generator.encode(prompt.turns, [records[k] for k in keys])

    def _generate(self, prompts, keys, images, records, max_new_tokens: int) -> list[str]:
        """One `generate` of the generation layer over these prompts (greedy, per-row stop strings)."""
        rows = [
            Row(self._encode(prompt, ks, records), [images[k] for k in ks], [records[k] for k in ks],
                self.generator.instructions(prompt.turns), GenerationSettings(max_new_tokens=max_new_tokens, stop=prompt.stop))
            for prompt, ks in zip(prompts, keys)
        ]  # fmt: skip
        return [answer.text for answer in self.generator.generate(rows)]

    def _predict_shared(self, rows: list[int], prompts, keys, images, records, max_new_tokens: int, results: list) -> list[int]:
        """Answer the rows whose prompts show the same images (two or more) from one encoding of
        their common prefix, writing into `results`; returns the rows left to `generate`."""
        from lyrics.inference.prefix_cache import common_prefix, greedy_after_prefix
        from lyrics.models.conditional_generation import VisualInputs

        by_images: dict[tuple, list[int]] = {}
        for i in rows:
            by_images.setdefault(tuple(keys[i]), []).append(i)
        left = []
        proc, llm = self.processor, self.model.language_model
        pad = proc.tokenizer.pad_token_id if proc.tokenizer.pad_token_id is not None else 0
        eos = {proc.tokenizer.eos_token_id} | set(_ids(getattr(llm.generation_config, "eos_token_id", None)))
        eos.discard(None)
        for order, group in by_images.items():
            encoded = [self._encode(prompts[i], keys[i], records) for i in group]
            start = common_prefix(encoded) if len(group) > 1 and order else 0
            if start == 0 or any(proc.image_token_id in row[start:] for row in encoded):
                left += group  # nothing shared, or an image would fall after the shared part
                continue
            with self.generator.autocast_context():
                visual = VisualInputs(**self.generator.visual_inputs([images[k] for k in order], [records[k] for k in order], None))
                prefix = self.model.embed(torch.tensor([encoded[0][:start]], device=self.device), visual)
                new = greedy_after_prefix(llm, prefix, [row[start:] for row in encoded], max_new_tokens, eos, pad, self.max_batch)
            for i, ids in zip(group, new):
                settings = GenerationSettings(max_new_tokens=max_new_tokens, stop=prompts[i].stop)
                results[i] = Prediction(self.generator.answer(ids, settings).text)
        return left


def _ids(value: Any) -> list[int]:
    """A generation config's `eos_token_id`: one id, a list of them, or None."""
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)
