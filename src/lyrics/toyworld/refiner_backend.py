"""The toy world's refiner backend: the "toy" tagger, detector and segmenter over `vision`.

Importing this module registers "toy" for all three stages with the refiner's backend table
(`lyrics.refiner.backends`); a config that names "toy" finds it through the entry point
`toy = "lyrics.toyworld.refiner_backend"` of the group `lyrics.refiner_backends` in pyproject, so the
refiner never imports the toy world. The three stages of one refiner share one `ToyAnalyzer`, so
each image is analysed once however many toy stages run. Features per object:

* detection (`ToyDetector`): the 24-value descriptor of `vision` (colour, shape fits, extent,
  visibility, scale, decided class), zero-padded to `detection_feature_size`;
* segmentation (`ToySegmenter`, g x g values, g = floor(sqrt(segmentation_feature_size)),
  zero-padded): the visible mask cropped to its box and area-averaged to a g x g grid.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lyrics.configuration import RefinerConfig
from lyrics.refiner.backends import register
from lyrics.refiner.spatial import Box
from lyrics.refiner.stages import BackendError, Detection, Segment
from lyrics.toyworld.vision import DETECTION_DESCRIPTOR_SIZE, ToyObject, analyse, classify_pixels, dominant_colour_mask

MIN_SEGMENTATION_GRID = 2


# ------------------------------------------------------------------------------------- descriptors
def segmentation_grid(size: int) -> int:
    grid = math.isqrt(size)
    if grid < MIN_SEGMENTATION_GRID:
        raise BackendError(
            f"toy segmenter: segmentation_feature_size={size} is too small for its mask descriptor "
            f"(needs at least {MIN_SEGMENTATION_GRID ** 2} for a {MIN_SEGMENTATION_GRID}x{MIN_SEGMENTATION_GRID} grid)"
        )
    return grid


def mask_descriptor(mask: np.ndarray, box: Box, size: int) -> torch.Tensor:
    """Visible mask inside its box, area-averaged to g x g (g = floor(sqrt(size))), zero-padded."""
    grid = segmentation_grid(size)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    crop = mask[max(0, y1) : max(y1 + 1, y2), max(0, x1) : max(x1 + 1, x2)]
    out = torch.zeros(size)
    if crop.size:
        pooled = F.adaptive_avg_pool2d(torch.from_numpy(crop.astype(np.float32))[None, None], (grid, grid))
        out[: grid * grid] = pooled.flatten()
    return out


def pad_feature(values: torch.Tensor, size: int, stage: str, field: str) -> torch.Tensor:
    if values.numel() > size:
        raise BackendError(
            f"{stage}: RefinerConfig.{field}={size} is too small for its {values.numel()}-value descriptor"
        )
    return torch.cat([values, torch.zeros(size - values.numel())])



# ------------------------------------------------------------------------------------------ stages
class ToyAnalyzer:
    """Runs `analyse` once per image and shares the result between the toy stages.

    The cache is keyed by the image object (checked through a weak reference, so a new image that
    reuses a freed id is never served a stale answer) and holds only the latest batch.
    """

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._cache: dict[int, tuple[weakref.ref, list[ToyObject]]] = {}

    def __call__(self, image: Image.Image) -> list[ToyObject]:
        entry = self._cache.get(id(image))
        if entry is not None and entry[0]() is image:
            return entry[1]
        objects = analyse(image)
        if len(self._cache) >= self.capacity:
            self._cache.pop(next(iter(self._cache)))
        self._cache[id(image)] = (weakref.ref(image), objects)
        return objects


class ToyTagger:
    """Tags = the distinct "<colour> <shape>" of the shapes found, best fit first."""

    def __init__(self, analyzer: ToyAnalyzer, threshold: float = 0.25, max_tags: int = 32) -> None:
        self.analyzer, self.threshold, self.max_tags = analyzer, threshold, max_tags

    def tag(self, images: Sequence[Image.Image], given: Sequence[Sequence[str] | None] | None = None) -> list[list[tuple[str, float]]]:
        results = []
        for image in images:
            scores: dict[str, float] = {}
            for obj in self.analyzer(image):
                if obj.score >= self.threshold and obj.tag not in scores:
                    scores[obj.tag] = obj.score
            results.append(list(scores.items())[: self.max_tags])
        return results


class ToyDetector:
    """Shapes whose tag is among the image's tags and whose fit reaches `box_threshold`."""

    def __init__(self, analyzer: ToyAnalyzer, feature_size: int, box_threshold: float = 0.25) -> None:
        if feature_size < DETECTION_DESCRIPTOR_SIZE:
            raise BackendError(
                f"toy detector: RefinerConfig.detection_feature_size={feature_size} is too small for its "
                f"{DETECTION_DESCRIPTOR_SIZE}-value descriptor"
            )
        self.analyzer, self.feature_size, self.box_threshold = analyzer, feature_size, box_threshold

    def detect(self, images: Sequence[Image.Image], tags: Sequence[Sequence[str]]) -> list[list[Detection]]:
        results = []
        for image, image_tags in zip(images, tags):
            wanted = {" ".join(t.lower().split()) for t in image_tags}
            results.append(
                [
                    Detection(obj.tag, obj.score, obj.box, pad_feature(obj.descriptor, self.feature_size, "toy detector", "detection_feature_size"))
                    for obj in self.analyzer(image)
                    if obj.tag in wanted and obj.score >= self.box_threshold
                ]
            )
        return results


class ToySegmenter:
    """The visible mask of each box: the toy shape with exactly that box when the toy detector found
    it, otherwise the pixels of the box's dominant colour inside the box."""

    def __init__(self, analyzer: ToyAnalyzer, feature_size: int) -> None:
        segmentation_grid(feature_size)  # fail early with a clear message
        self.analyzer, self.feature_size = analyzer, feature_size

    def segment(self, images: Sequence[Image.Image], boxes: Sequence[Sequence[Box]]) -> list[list[Segment]]:
        results = []
        for image, image_boxes in zip(images, boxes):
            objects = {tuple(o.box): o for o in self.analyzer(image)} if image_boxes else {}
            labels = None
            segments = []
            for box in image_boxes:
                obj = objects.get(tuple(float(v) for v in box))
                if obj is not None:
                    mask = obj.mask
                else:
                    if labels is None:
                        labels = classify_pixels(np.asarray(image.convert("RGB")))
                    mask = dominant_colour_mask(labels, box)
                segments.append(Segment(mask, mask_descriptor(mask, box, self.feature_size)))
            results.append(segments)
        return results


# ---------------------------------------------------------------------------------- registration
def _analyzer(shared: dict[str, Any]) -> ToyAnalyzer:
    """The `ToyAnalyzer` of the refiner being built (one per refiner, shared by its toy stages)."""
    if "toy_analyzer" not in shared:
        shared["toy_analyzer"] = ToyAnalyzer()
    return shared["toy_analyzer"]


def build_tagger(config: RefinerConfig, device: str | torch.device, shared: dict[str, Any]) -> ToyTagger:
    return ToyTagger(_analyzer(shared), config.tag_threshold, config.max_tags)


def build_detector(config: RefinerConfig, device: str | torch.device, shared: dict[str, Any]) -> ToyDetector:
    return ToyDetector(_analyzer(shared), config.detection_feature_size, config.box_threshold)


def build_segmenter(config: RefinerConfig, device: str | torch.device, shared: dict[str, Any]) -> ToySegmenter:
    return ToySegmenter(_analyzer(shared), config.segmentation_feature_size)


register("tagger", "toy", build_tagger)
register("detector", "toy", build_detector)
register("segmenter", "toy", build_segmenter)
