"""What both recipes share: typed YAML sections and the data sources they open the same way.

A recipe's `model:` and `data:` sections are dataclasses (`Stage1Model`, `Stage2Data`, ...): a
misspelt key such as `stage_1:` is an error naming it, never a silently different model.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T")


def typed_section(cls: type[T], data: dict[str, Any] | None, section: str) -> T:
    """`cls(**data)` for the YAML section `section`, refusing unknown keys by name (with the closest
    known key) and values of the wrong kind (a mapping where a path is expected, say)."""
    data = dict(data or {})
    known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = [k for k in data if k not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"unknown key(s) in section `{section}:`: {', '.join(hints)}; known keys: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        expected = hints[key]
        if value is not None and not _matches(value, expected):
            raise ValueError(f"`{section}.{key}` must be {_describe(expected)}, got {type(value).__name__} {value!r}")
    return cls(**data)


def _matches(value: Any, expected: Any) -> bool:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(expected) if arg is not type(None))
    if expected is Any:
        return True
    if origin is not None:
        expected = origin
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _describe(expected: Any) -> str:
    args = [a for a in typing.get_args(expected) if a is not type(None)] or [expected]
    return " or ".join(getattr(typing.get_origin(a) or a, "__name__", str(a)) for a in args)


@dataclass
class DataSources:
    """The `data:` keys both stages read.

    Args:
        images: image root the samples' relative paths start from.
        refiner_store: `lyrics refine` output, joined by image key.
        image_features: cached image-encoder features (`lyrics.training.features`); disables augmentation.
        augment: `lyrics.data.augment.AugmentConfig` fields plus `enabled`.
        seed: per-sample randomness of the datasets (augmentation, template choice).
    """

    images: str | None = None
    refiner_store: str | None = None
    image_features: str | None = None
    augment: dict = field(default_factory=dict)
    seed: int = 0


def open_refiner_store(data: DataSources, model_config=None):
    """The store of `data.refiner_store`; its refiner is recorded in `model_config` (saved checkpoints
    then say which refiner made their training features, `lyrics.refiner.provenance`)."""
    if not data.refiner_store:
        return None
    from lyrics.refiner.provenance import record_store_refiner
    from lyrics.refiner.store import open_store

    store = open_store(data.refiner_store)
    if model_config is not None:
        record_store_refiner(model_config, store)
    return store


def open_feature_cache(data: DataSources):
    if not data.image_features:
        return None
    from lyrics.training.features import FeatureCache

    return FeatureCache(data.image_features)


def make_augment(data: DataSources, config):
    """Box-aware augmentation when `augment.enabled` (and no cached features, which fix the pixels)."""
    spec = dict(data.augment or {})
    if not spec.pop("enabled", False) or data.image_features:
        return None
    from lyrics.data.augment import AugmentConfig, BoxAwareAugment

    refiner = config.refiner_config
    return BoxAwareAugment(
        AugmentConfig(
            detection_feature_size=refiner.detection_feature_size,
            spatial_format=refiner.coordinate_format,
            spatial_style=refiner.spatial_format,
            **spec,
        ),
        seed=data.seed,
    )
