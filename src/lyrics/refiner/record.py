"""What the visual refiner produces for one image (paper section 3.1, Figure 2 right).

A `RefinerRecord` is the contract between the refiner (which writes records into a feature store),
the training data (which reads them), and inference (which runs the refiner live). It holds the
tags, the kept objects with their boxes and optional masks, the textual spatial representation, and
the local features of shape (K, D) that the grounding queries attend to (K = number of objects,
padding is added only when records are batched, see `lyrics.models.processing.pad_local_features`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lyrics.refiner.spatial import Box, format_spatial


@dataclass
class RefinedObject:
    """One semantic-aware visual object.

    Args:
        tag: the tag the detector matched this box to.
        score: detection confidence in [0, 1].
        box: pixel xyxy box in the original image.
        box_norm: the same box normalised to [0, 1] by the image size.
        mask_rle: optional COCO-style RLE of the segmentation mask, `{"size": [h, w], "counts": str}`.
    """

    tag: str
    score: float
    box: Box
    box_norm: Box
    mask_rle: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"tag": self.tag, "score": float(self.score), "box": list(self.box), "box_norm": list(self.box_norm)}
        if self.mask_rle is not None:
            out["mask_rle"] = self.mask_rle
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RefinedObject":
        return cls(
            tag=str(data["tag"]),
            score=float(data["score"]),
            box=tuple(float(v) for v in data["box"]),  # type: ignore[arg-type]
            box_norm=tuple(float(v) for v in data["box_norm"]),  # type: ignore[arg-type]
            mask_rle=data.get("mask_rle"),
        )


@dataclass
class RefinerRecord:
    """Everything the refiner says about one image.

    Args:
        image_id: stable identifier (the store's key), usually the path relative to the input root.
        width, height: size of the (EXIF-corrected) image the boxes refer to.
        tags: the tagger's output, in order of confidence.
        objects: kept objects, highest score first; row k of `local_features` belongs to object k.
        spatial_text: the textual spatial representation of `objects`.
        local_features: `(K, D)` float tensor, D = detection state + box + segmentation feature.
    """

    image_id: str
    width: int
    height: int
    tags: list[str]
    objects: list[RefinedObject]
    spatial_text: str
    local_features: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.local_features.dim() != 2 or self.local_features.shape[0] != len(self.objects):
            raise ValueError(
                f"record {self.image_id}: local_features must be (K={len(self.objects)}, D), "
                f"got {tuple(self.local_features.shape)}"
            )

    @property
    def boxes_norm(self) -> list[Box]:
        return [obj.box_norm for obj in self.objects]

    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable part of the record (everything but the feature tensor)."""
        return {
            "image_id": self.image_id,
            "width": self.width,
            "height": self.height,
            "tags": list(self.tags),
            "objects": [obj.to_dict() for obj in self.objects],
            "spatial_text": self.spatial_text,
            "feature_dim": int(self.local_features.shape[1]),
            "meta": self.meta,
        }

    @classmethod
    def from_metadata(cls, data: dict[str, Any], local_features: torch.Tensor) -> "RefinerRecord":
        return cls(
            image_id=str(data["image_id"]),
            width=int(data["width"]),
            height=int(data["height"]),
            tags=[str(t) for t in data["tags"]],
            objects=[RefinedObject.from_dict(o) for o in data["objects"]],
            spatial_text=str(data["spatial_text"]),
            local_features=local_features,
            meta=dict(data.get("meta", {})),
        )

    def spatial(self, fmt: str = "int1000", style: str = "paper", max_objects: int | None = None) -> str:
        """Re-render the spatial representation in another convention or for fewer objects."""
        objects = self.objects if max_objects is None else self.objects[:max_objects]
        return format_spatial(((o.tag, o.box_norm) for o in objects), fmt, style)
