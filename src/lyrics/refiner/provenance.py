"""Which refiner made a feature store, which refiner a checkpoint was trained on, and which one to run.

The refiner is frozen, so a model only works with features from the refiner its training features
came from. That refiner is written down twice:

* `lyrics refine` records the `RefinerConfig` in the store (`store.json`, key `refiner_config`);
* the training recipes copy the store's record into the model config
  (`LyricsConfig.trained_refiner_config`, via `record_store_refiner`), so every checkpoint saved with
  `save_pretrained` says which refiner made its training features.

`lyrics chat`, `serve`, `demo-ui` and `eval` rebuild that refiner (`checkpoint_refiner_config`).
Checkpoints from before the record fall back to their `refiner_config`.

What counts as the same refiner: every `RefinerConfig` field except those in `NOT_IDENTITY` (how fast
the refiner runs and how a store keeps its features, not what the refiner says about an image). A
model location (`LOCATION_FIELDS`) may move: the same final path component (file or directory name,
or the last part of a hub id) is taken as the same model in another place, so
`openai/clip-vit-large-patch14` and `/models/clip-vit-large-patch14` match.

Choosing a backend (`tagger=clip`) without naming its model picks that backend's default model
(`DEFAULT_MODELS`); the previous backend's model is never carried over.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from lyrics.configuration import RefinerConfig

REFINER_FIELDS = frozenset(RefinerConfig.__annotations__)
STAGES = ("tagger", "detector", "segmenter")

# The model a backend loads when its `<stage>_model` is not given: the paper's backends take the
# RefinerConfig defaults; any other backend (RAM++, loaded from a `.pth` file the user downloads,
# docs/refiner.md; "given"; plug-ins such as "toy") has none.
_PAPER = RefinerConfig()
DEFAULT_MODELS: dict[str, dict[str, str]] = {
    "tagger": {_PAPER.tagger: _PAPER.tagger_model},
    "detector": {_PAPER.detector: _PAPER.detector_model},
    "segmenter": {_PAPER.segmenter: _PAPER.segmenter_model, "sam": "facebook/sam-vit-huge"},
}

# Fields that do not change what the refiner says about an image.
NOT_IDENTITY = frozenset({"batch_size", "shard_size", "store_format", "feature_dtype", "max_image_pixels"})
# Fields that name where a model or file lives; a move keeps the final path component.
LOCATION_FIELDS = frozenset({"tagger_model", "detector_model", "segmenter_model", "tag_vocabulary"})


class RefinerMismatch(ValueError):
    """A refiner that differs from the one a checkpoint was trained with (or a store was made by)."""


def refiner_fields(config: RefinerConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The `RefinerConfig` fields of a config or a recorded dict (transformers' generic keys dropped)."""
    values = config.to_dict() if isinstance(config, RefinerConfig) else dict(config)
    return {k: values[k] for k in sorted(values) if k in REFINER_FIELDS}


def apply_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` updated with `overrides`; a stage whose backend changes gets that backend's default
    model unless `overrides` names the model too, and segmenter "none" makes no segmentation feature."""
    unknown = sorted(k for k in overrides if k not in REFINER_FIELDS)
    if unknown:
        raise ValueError(f"unknown refiner field(s) {unknown}; RefinerConfig has {sorted(REFINER_FIELDS)}")
    values = {**base, **overrides}
    for stage in STAGES:
        name = overrides.get(stage)
        if name is None or name == base.get(stage):
            continue
        if f"{stage}_model" not in overrides:
            values[f"{stage}_model"] = DEFAULT_MODELS[stage].get(name)
    if overrides.get("segmenter") == "none" and "segmentation_feature_size" not in overrides:
        values["segmentation_feature_size"] = 0
    return values


def _same_location(a: Any, b: Any) -> bool:
    if a == b:
        return True
    if not a or not b:
        return False
    return PurePosixPath(str(a).rstrip("/")).name == PurePosixPath(str(b).rstrip("/")).name


def differences(recorded: Mapping[str, Any], other: Mapping[str, Any]) -> list[str]:
    """`"field: 'recorded' vs 'other'"` for every identity field where two refiner configs differ
    (moved models allowed). Fields missing on one side count as their `RefinerConfig` default."""
    defaults = RefinerConfig().to_dict()
    out = []
    for field in sorted(REFINER_FIELDS - NOT_IDENTITY):
        a, b = recorded.get(field, defaults.get(field)), other.get(field, defaults.get(field))
        same = _same_location(a, b) if field in LOCATION_FIELDS else a == b
        if not same:
            out.append(f"{field}: {a!r} vs {b!r}")
    return out


def record_store_refiner(config: Any, store: Any) -> None:
    """Write the refiner that made `store` into the model config `config` (a `LyricsConfig`), so the
    checkpoints saved from it carry `trained_refiner_config`. Stores without a record (in-memory
    stand-ins) leave the config as it is."""
    recorded = getattr(store, "refiner_config", None)
    if recorded:
        config.trained_refiner_config = refiner_fields(recorded)


def parse_refiner_options(items: list[str] | None) -> dict[str, Any]:
    """`["tagger=clip", "refiner_config.box_threshold=0.3"]` (the `--refiner` options) -> field values."""
    from lyrics.presets import parse_dotted

    values = parse_dotted(list(items or []))
    nested = values.pop("refiner_config", {})
    if not isinstance(nested, dict):
        raise ValueError("--refiner refiner_config must name a field, e.g. refiner_config.box_threshold=0.3")
    values.update(nested)
    unknown = sorted(k for k in values if k not in REFINER_FIELDS)
    if unknown:
        raise ValueError(f"--refiner: unknown RefinerConfig field(s) {unknown}")
    return values


def checkpoint_refiner_config(config: Any, overrides: Mapping[str, Any] | None = None, where: str = "the checkpoint") -> RefinerConfig:
    """The `RefinerConfig` to run live with the model config `config` (a `LyricsConfig`).

    The refiner recorded in the checkpoint (`trained_refiner_config`) when there is one, else the
    config's `refiner_config` (checkpoints from before the record). `overrides` (the user's explicit
    `--refiner` fields) apply on top; with a record they may only repeat it, move a model
    (`LOCATION_FIELDS`) or change runtime fields, else `RefinerMismatch` names the differences.
    """
    recorded = getattr(config, "trained_refiner_config", None)
    base = refiner_fields(recorded) if recorded else refiner_fields(config.refiner_config)
    values = apply_overrides(base, dict(overrides or {}))
    if recorded:
        changed = differences(base, values)
        if changed:
            raise RefinerMismatch(
                f"{where} was trained on features of the refiner recorded in its config.json "
                f"(trained_refiner_config); the --refiner options ask for a different one ({'; '.join(changed)}, "
                "recorded value first). Drop those options to run the refiner it was trained with; only "
                f"moved model paths (same file or folder name) and {', '.join(sorted(NOT_IDENTITY))} may change."
            )
    refiner = RefinerConfig(**values)
    if config.mqformer_config.num_grounding_query_tokens and refiner.local_feature_size != config.refiner_config.local_feature_size:
        raise RefinerMismatch(
            f"the refiner makes {refiner.local_feature_size}-d local features but {where}'s MQ-Former reads "
            f"{config.refiner_config.local_feature_size}-d ones (detection_feature_size + box_feature_size + "
            "segmentation_feature_size)"
        )
    return refiner


def check_store(config: Any, store: Any, where: str = "the checkpoint") -> None:
    """Refuse a precomputed store (`lyrics eval --refiner-store`) made by another refiner than the one
    recorded in the model config `config`; checkpoints without a record are not checked here."""
    recorded = getattr(config, "trained_refiner_config", None)
    if not recorded:
        return
    changed = differences(recorded, refiner_fields(getattr(store, "refiner_config", None) or {}))
    if changed:
        root = getattr(getattr(store, "layout", None), "root", "the refiner store")
        raise RefinerMismatch(
            f"refiner store {root} was made by a different refiner than the one {where} was trained with "
            f"({'; '.join(changed)}, checkpoint value first); refine the images with the checkpoint's refiner "
            "or evaluate with the live refiner (no --refiner-store)"
        )
