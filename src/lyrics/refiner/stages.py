"""The three pluggable stages of the visual refiner and what they hand each other.

    tagger    images                  -> tags per image            (RAM++, CLIP zero-shot, given)
    detector  images + tags           -> `Detection`s per image    (Grounding-DINO)
    segmenter images + kept boxes     -> `Segment`s per box        (SAM-HQ, SAM, none)

`backends` maps the backend names of a `RefinerConfig` to these; plug-ins registered there (the toy
world's "toy" backend for all three stages) implement the same protocols.

Every stage works on a batch (a list of images) so the real backends can batch their forward passes.
Boxes between stages are pixel xyxy in the (EXIF-corrected) image. A stage returns one feature vector
per object of exactly the width the `RefinerConfig` asks for; the pipeline concatenates them into the
`(K, D)` local features of a `RefinerRecord`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch
from PIL import Image

from lyrics.refiner.spatial import Box


@dataclass
class Detection:
    """One candidate object from the detector.

    Args:
        tag: the tag (from the image's tag list) this box was matched to.
        score: confidence in [0, 1]; NMS and top-K rank by it.
        box: pixel xyxy box in the image.
        feature: `(detection_feature_size,)` float tensor (Grounding-DINO: the decoder state of the
            query that produced the box).
    """

    tag: str
    score: float
    box: Box
    feature: torch.Tensor


@dataclass
class Segment:
    """The segmenter's answer for one box.

    Args:
        mask: `(H, W)` boolean mask at image resolution, or None when the segmenter makes no masks.
        feature: `(segmentation_feature_size,)` float tensor (SAM: the image embedding pooled under
            the mask).
    """

    mask: np.ndarray | None
    feature: torch.Tensor


class Tagger(Protocol):
    def tag(
        self, images: Sequence[Image.Image], given: Sequence[Sequence[str] | None] | None = None
    ) -> list[list[tuple[str, float]]]:
        """`(tag, score)` pairs per image, best first."""
        ...


class Detector(Protocol):
    feature_size: int

    def detect(self, images: Sequence[Image.Image], tags: Sequence[Sequence[str]]) -> list[list[Detection]]:
        """Candidate detections per image, before NMS and top-K (the pipeline does both)."""
        ...


class Segmenter(Protocol):
    feature_size: int

    def segment(self, images: Sequence[Image.Image], boxes: Sequence[Sequence[Box]]) -> list[list[Segment]]:
        """One `Segment` per box, in the order of `boxes`."""
        ...


class BackendError(RuntimeError):
    """A backend cannot be built (missing package, wrong checkpoint, mismatched feature size)."""


def check_feature_size(stage: str, produced: int, configured: int, field: str) -> None:
    """The stored layout is fixed by the config; a backend whose width differs is a setup error."""
    if produced != configured:
        raise BackendError(
            f"{stage} produces {produced}-d features but RefinerConfig.{field}={configured}; "
            f"set {field}={produced} or use a matching checkpoint"
        )
