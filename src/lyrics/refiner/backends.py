"""What a backend name in a `RefinerConfig` means: a table from (stage, name) to a factory.

A config names each stage's backend by string (`tagger="clip"`, `detector="grounding_dino"`,
`segmenter="toy"`); `factory(stage, name)` finds the function that builds it. The product backends
(CLIP, RAM++, given tags, Grounding-DINO, SAM / SAM-HQ, no segmenter) are listed in this module, and
their heavy imports happen only when one is built.

Why a table and not an if-chain in the pipeline: backends that are not part of the product, such as
the toy world's classical "toy" backend (`lyrics.toyworld.refiner_backend`), must be usable by name
without the refiner importing them. Such a module calls `register` when it is imported, and a name
not in the table is looked up among the Python entry points of the group `lyrics.refiner_backends`
(lyrics's pyproject declares `toy = "lyrics.toyworld.refiner_backend"`); loading the entry point
imports the module, which registers its stages. Another package can add a backend the same way.
Nothing else fills the table: no scanning of modules, no import side effects in the product code.

A factory is `factory(config, device, shared) -> stage`. `shared` is one dict per refiner being
built, for stages of one backend that share work (the toy stages analyse each image once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Union

import torch
from PIL import Image

from lyrics.configuration import RefinerConfig
from lyrics.refiner.spatial import Box
from lyrics.refiner.stages import BackendError, Detector, Segment, Segmenter, Tagger

STAGES = ("tagger", "detector", "segmenter")
ENTRY_POINT_GROUP = "lyrics.refiner_backends"

Stage = Union[Tagger, Detector, Segmenter]
StageFactory = Callable[[RefinerConfig, Union[str, torch.device], dict[str, Any]], Stage]


def register(stage: str, name: str, factory: StageFactory) -> None:
    """Make `name` a backend of `stage` (one of `STAGES`), built by `factory`.

    Registering the same factory again is a no-op (a module imported twice); another factory under a
    taken name is an error, so a plug-in can never silently replace a backend.
    """
    if stage not in STAGES:
        raise ValueError(f"refiner stage must be one of {STAGES}, got {stage!r}")
    existing = _FACTORIES.get((stage, name))
    if existing is not None and existing is not factory:
        raise BackendError(f"{stage} backend {name!r} is already registered ({_where(existing)}); cannot register {_where(factory)}")
    _FACTORIES[(stage, name)] = factory


def factory(stage: str, name: str) -> StageFactory:
    """The factory of backend `name` for `stage`, loading its entry point the first time it is named.

    Raises:
        BackendError: no such backend; the message lists the known ones.
    """
    if stage not in STAGES:
        raise ValueError(f"refiner stage must be one of {STAGES}, got {stage!r}")
    if (stage, name) not in _FACTORIES:
        _load_entry_points(lambda entry: entry.name == name)
    if (stage, name) not in _FACTORIES:
        # Only on the error path: load every plug-in so the message lists all there are.
        failures = _load_entry_points(lambda entry: True, strict=False)
        known = ", ".join(registered(stage))
        hint = f" (entry points that failed to load: {'; '.join(failures)})" if failures else ""
        raise BackendError(
            f"unknown {stage} backend {name!r}; known: {known}. Backends outside lyrics.refiner register "
            f"through the entry-point group {ENTRY_POINT_GROUP!r} of an installed package{hint}"
        )
    return _FACTORIES[(stage, name)]


def registered(stage: str) -> list[str]:
    """Names of the backends of `stage` registered so far (entry points not yet loaded are not in it)."""
    return sorted(name for known_stage, name in _FACTORIES if known_stage == stage)


def _load_entry_points(wanted: Callable[[Any], bool], strict: bool = True) -> list[str]:
    failures = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if not wanted(entry):
            continue
        try:
            entry.load()
        except Exception as exc:  # a broken plug-in: name it rather than fail somewhere obscure
            if strict:
                raise BackendError(f"refiner backend {entry.name!r}: entry point {entry.value} failed to load: {exc}") from exc
            failures.append(f"{entry.name} = {entry.value}: {exc}")
    return failures


def _where(factory: StageFactory) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"


# ---------------------------------------------------------------------------------- the product's
class NoSegmenter:
    """segmenter "none": no masks, no segmentation features (the released code has no SAM)."""

    feature_size = 0

    def segment(self, images: Sequence[Image.Image], boxes: Sequence[Sequence[Box]]) -> list[list[Segment]]:
        return [[Segment(None, torch.zeros(0)) for _ in image_boxes] for image_boxes in boxes]


def _model_id(value: str | None, field: str) -> str:
    if not value:
        raise BackendError(f"RefinerConfig.{field} is not set (a hub id or a local directory)")
    return value


def _clip_tagger(config: RefinerConfig, device: str | torch.device, shared: dict[str, Any]) -> Tagger:
    from lyrics.refiner.tagging import ClipTagger

    name = Path(str(config.tagger_model or "")).name.lower()
    if name.endswith(".pth") or name.startswith(("ram_", "ram-")):
        raise BackendError(
            f"tagger='clip' but RefinerConfig.tagger_model={config.tagger_model!r} names a RAM checkpoint; "
            "give a CLIP hub id or directory (tagger_model=openai/clip-vit-large-patch14), or use tagger=ram"
        )
    return ClipTagger(
        _model_id(config.tagger_model, "tagger_model"),
        config.tag_vocabulary,
        config.tag_threshold,
        config.max_tags,
        config.tag_prompt,
        config.batch_size,
        device,
    )


def _ram_tagger(config: RefinerConfig, device: str | torch.device, shared: dict[str, Any]) -> Tagger:
    from lyrics.refiner.tagging import RamTagger

    return RamTagger(config.tagger_model, config.max_tags, device=device)


def _given_tagger(config: RefinerConfig, device: str | torch.device, shared: dict[str, Any]) -> Tagger:
    from lyrics.refiner.tagging import GivenTagger

    return GivenTagger(config.max_tags)


def _grounding_dino(config: RefinerConfig, device: str | torch.device, shared: dict[str, Any]) -> Detector:
    from lyrics.refiner.detection import GroundingDinoDetector

    return GroundingDinoDetector(
        _model_id(config.detector_model, "detector_model"),
        config.box_threshold,
        config.text_threshold,
        config.detection_feature_size,
        config.batch_size,
        device,
    )


def _sam(config: RefinerConfig, device: str | torch.device, shared: dict[str, Any]) -> Segmenter:
    from lyrics.refiner.segmentation import SamSegmenter

    return SamSegmenter(
        _model_id(config.segmenter_model, "segmenter_model"),
        hq=config.segmenter == "sam_hq",
        feature_size=config.segmentation_feature_size,
        batch_size=config.batch_size,
        device=device,
    )


def _no_segmenter(config: RefinerConfig, device: str | torch.device, shared: dict[str, Any]) -> Segmenter:
    return NoSegmenter()


_FACTORIES: dict[tuple[str, str], StageFactory] = {
    ("tagger", "clip"): _clip_tagger,
    ("tagger", "ram"): _ram_tagger,
    ("tagger", "given"): _given_tagger,
    ("detector", "grounding_dino"): _grounding_dino,
    ("segmenter", "sam_hq"): _sam,
    ("segmenter", "sam"): _sam,
    ("segmenter", "none"): _no_segmenter,
}
