"""The paper's training augmentation (section 4: 224 x 224 images, random resized crop, horizontal
flip), applied so that boxes and texts stay true to the pixels (docs/design.md, "Ambiguities in the paper and the reading we take").

One call transforms, together:

* the image: a random crop (area fraction in `scale`, aspect ratio in `ratio`, torchvision's
  RandomResizedCrop parameterisation), an optional mirror, then a resize to `size` x `size`;
* the record's normalised boxes, which the text mentions through `<box:i>` placeholders (see
  `lyrics.data.records`), so moving a box moves every mention of it;
* the refiner record: every object's `box_norm` and pixel `box` (now in the output image, whose
  size becomes `size` x `size`), the box columns of `local_features` (layout [detection state |
  box (cx, cy, w, h normalised) | segmentation]; the box starts at column `detection_feature_size`),
  and `spatial_text`, re-rendered with `RefinerRecord.spatial`. Object masks cannot follow without
  re-encoding, so `mask_rle` is dropped from augmented objects;
* the text: a flip swaps left/right, Left/Right, leftmost/rightmost (any case) in every turn.

Safety rules:

* a crop never cuts a box the conversation refers to: the crop is drawn among those containing the
  union of referred boxes (up to `max_attempts` draws), else the image is not cropped;
* objects (record boxes nobody refers to, refiner objects) keeping less than `min_visible` of their
  area are dropped; record placeholders are renumbered when a record box is dropped;
* text with literal coordinates (no placeholders) cannot follow, so such samples are only resized.

Randomness comes from the `random.Random` passed in (the dataset seeds it per sample, epoch and
seed), or the transform's own seeded generator.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from PIL import Image

from lyrics.data.records import PLACEHOLDER, has_literal_boxes, placeholder
from lyrics.refiner.record import RefinedObject, RefinerRecord
from lyrics.refiner.spatial import Box

_SIDES = re.compile(r"\b(left|right|leftmost|rightmost)\b", re.IGNORECASE)
_SWAP = {"left": "right", "right": "left", "leftmost": "rightmost", "rightmost": "leftmost"}
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


@dataclass
class AugmentConfig:
    """Args:
    size: output side in pixels (paper: 224).
    scale: range of the crop's area as a fraction of the image (LAVIS/BLIP-2 use (0.5, 1.0)).
    ratio: range of the crop's aspect ratio w/h (sampled log-uniformly).
    crop_p: probability of trying a crop at all.
    flip_p: probability of a horizontal flip.
    min_visible: objects keeping less than this fraction of their area are dropped.
    max_attempts: crop draws before falling back to no crop.
    detection_feature_size: column where the (cx, cy, w, h) box starts in refiner local features;
        required when a refiner record with features is augmented (None: error, never a guess).
    spatial_format, spatial_style: how the refiner's spatial text is re-rendered.
    resample: "bicubic", "bilinear" or "nearest".
    """

    size: int = 224
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crop_p: float = 1.0
    flip_p: float = 0.5
    min_visible: float = 0.2
    max_attempts: int = 10
    detection_feature_size: int | None = None
    spatial_format: str = "int1000"
    spatial_style: str = "paper"
    resample: str = "bicubic"

    def __post_init__(self) -> None:
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {self.ratio}")
        if self.resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {list(_RESAMPLE)}, got {self.resample!r}")


@dataclass
class AugmentParams:
    """What was done: crop `(left, top, width, height)` in input pixels, the flip, and whether the
    crop fell back to the full image (`fallback`) or geometry was frozen by literal coordinates."""

    crop: tuple[int, int, int, int]
    flip: bool
    fallback: bool = False
    frozen: bool = False


@dataclass
class Augmented:
    image: Image.Image
    boxes: list[Box]
    conversations: list[dict[str, str]]
    refiner: RefinerRecord | None
    params: AugmentParams
    dropped_boxes: list[int] = field(default_factory=list)


def swap_sides(text: str) -> str:
    """Mirror the words left/right (and leftmost/rightmost), keeping their case."""

    def swap(match: re.Match) -> str:
        word = match.group(0)
        new = _SWAP[word.lower()]
        if word.isupper():
            return new.upper()
        return new.capitalize() if word[0].isupper() else new

    return _SIDES.sub(swap, text)


def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


class BoxAwareAugment:
    """Random resized crop + horizontal flip + resize that keeps boxes, texts and refiner records consistent."""

    def __init__(self, config: AugmentConfig | None = None, seed: int = 0, **overrides: Any):
        self.config = replace(config or AugmentConfig(), **overrides)
        self._rng = random.Random(seed)

    # --- parameters -----------------------------------------------------------------------------
    def sample_crop(self, width: int, height: int, keep: list[Box], rng: random.Random) -> tuple[tuple[int, int, int, int], bool]:
        """(left, top, w, h) containing every box in `keep` (normalised), and whether it fell back."""
        cfg = self.config
        if keep:
            ux1 = math.floor(min(b[0] for b in keep) * width)
            uy1 = math.floor(min(b[1] for b in keep) * height)
            ux2 = math.ceil(max(b[2] for b in keep) * width)
            uy2 = math.ceil(max(b[3] for b in keep) * height)
        else:
            ux1, uy1, ux2, uy2 = width, height, 0, 0  # empty union: any crop contains it
        area = width * height
        log_ratio = (math.log(cfg.ratio[0]), math.log(cfg.ratio[1]))
        for _ in range(cfg.max_attempts):
            target = area * rng.uniform(*cfg.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if not (0 < w <= width and 0 < h <= height):
                continue
            x_lo, x_hi = max(0, ux2 - w), min(ux1, width - w)
            y_lo, y_hi = max(0, uy2 - h), min(uy1, height - h)
            if x_lo > x_hi or y_lo > y_hi:
                continue
            return (rng.randint(x_lo, x_hi), rng.randint(y_lo, y_hi), w, h), False
        return (0, 0, width, height), True

    # --- geometry -------------------------------------------------------------------------------
    @staticmethod
    def _move(box: Box, crop: tuple[int, int, int, int], width: int, height: int, flip: bool) -> tuple[Box, float]:
        """Normalised box in the output image, and the fraction of its area still visible."""
        left, top, w, h = crop
        x1 = (box[0] * width - left) / w
        y1 = (box[1] * height - top) / h
        x2 = (box[2] * width - left) / w
        y2 = (box[3] * height - top) / h
        clipped = (min(max(x1, 0.0), 1.0), min(max(y1, 0.0), 1.0), min(max(x2, 0.0), 1.0), min(max(y2, 0.0), 1.0))
        full = _area((x1, y1, x2, y2))
        if full > 0:
            visible = _area(clipped) / full
        else:  # a degenerate box (a point or a line) is visible when it lies inside the crop
            visible = 1.0 if (0 <= x1 <= 1 and 0 <= y1 <= 1 and 0 <= x2 <= 1 and 0 <= y2 <= 1) else 0.0
        if flip:
            clipped = (1.0 - clipped[2], clipped[1], 1.0 - clipped[0], clipped[3])
        return clipped, visible

    def _move_features(self, features: torch.Tensor, crop, width: int, height: int, flip: bool) -> torch.Tensor:
        det = self.config.detection_feature_size
        if features.shape[1] == 0 or features.shape[0] == 0:
            return features
        if det is None:
            raise ValueError(
                "augmenting a refiner record with local features needs detection_feature_size "
                "(where the cx, cy, w, h box columns start); pass RefinerConfig.detection_feature_size"
            )
        if det + 4 > features.shape[1]:
            raise ValueError(f"box columns {det}..{det + 4} do not fit local features of width {features.shape[1]}")
        out = features.clone()
        cx, cy, bw, bh = (features[:, det + k].double() for k in range(4))
        left, top, w, h = crop
        x1 = ((cx - bw / 2) * width - left) / w
        x2 = ((cx + bw / 2) * width - left) / w
        y1 = ((cy - bh / 2) * height - top) / h
        y2 = ((cy + bh / 2) * height - top) / h
        x1, x2, y1, y2 = (v.clamp(0.0, 1.0) for v in (x1, x2, y1, y2))
        if flip:
            x1, x2 = 1.0 - x2, 1.0 - x1
        new = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=1)
        out[:, det : det + 4] = new.to(features.dtype)
        return out

    def _move_refiner(self, record: RefinerRecord, crop, width: int, height: int, flip: bool) -> RefinerRecord:
        size = self.config.size
        kept_rows, objects = [], []
        for k, obj in enumerate(record.objects):
            box, visible = self._move(obj.box_norm, crop, width, height, flip)
            if visible < self.config.min_visible or (visible == 0.0):
                continue
            kept_rows.append(k)
            pixels = (box[0] * size, box[1] * size, box[2] * size, box[3] * size)
            objects.append(RefinedObject(obj.tag, obj.score, pixels, box, None))
        features = record.local_features[kept_rows] if kept_rows else record.local_features[:0]
        features = self._move_features(features, crop, width, height, flip)
        meta = dict(record.meta, augmented={"crop": list(crop), "flip": flip, "source_size": [width, height]})
        out = RefinerRecord(record.image_id, size, size, list(record.tags), objects, "", features, meta)
        out.spatial_text = out.spatial(self.config.spatial_format, self.config.spatial_style)
        return out

    # --- entry points ---------------------------------------------------------------------------
    def apply(
        self,
        image: Image.Image,
        boxes: list[Box],
        conversations: list[dict[str, str]],
        refiner: RefinerRecord | None = None,
        rng: random.Random | None = None,
    ) -> Augmented:
        """Augment one (image, normalised boxes, conversation with placeholders, refiner record)."""
        cfg = self.config
        rng = rng or self._rng
        width, height = image.size
        referenced = sorted({int(m.group(1)) for t in conversations for m in PLACEHOLDER.finditer(t["value"])})
        frozen = has_literal_boxes(conversations)
        crop, fallback, flip = (0, 0, width, height), False, False
        if not frozen:
            if rng.random() < cfg.crop_p:
                crop, fallback = self.sample_crop(width, height, [boxes[i] for i in referenced], rng)
            flip = rng.random() < cfg.flip_p
        new_boxes, mapping, dropped = [], {}, []
        for i, box in enumerate(boxes):
            moved, visible = self._move(box, crop, width, height, flip)
            if i not in referenced and (visible < cfg.min_visible or visible == 0.0):
                dropped.append(i)
                continue
            mapping[i] = len(new_boxes)
            new_boxes.append(moved)
        turns = []
        for turn in conversations:
            value = PLACEHOLDER.sub(lambda m: placeholder(mapping[int(m.group(1))]), turn["value"]) if dropped else turn["value"]
            turns.append({"from": turn["from"], "value": swap_sides(value) if flip else value})
        left, top, w, h = crop
        out = image.resize((cfg.size, cfg.size), _RESAMPLE[cfg.resample], box=(left, top, left + w, top + h))
        if flip:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        new_refiner = self._move_refiner(refiner, crop, width, height, flip) if refiner is not None else None
        return Augmented(out, new_boxes, turns, new_refiner, AugmentParams(crop, flip, fallback, frozen), dropped)

    def __call__(self, sample, rng: random.Random | None = None):
        """Dataset transform for an `InstructionSample` or a stage-1 `CaptionPair` (whose caption is
        mirrored like a conversation turn). Text-only samples pass through."""
        if sample.image is None:
            return sample
        if hasattr(sample, "conversations"):
            result = self.apply(sample.image, sample.boxes, sample.conversations, sample.refiner, rng)
            meta = dict(sample.meta, augment={"crop": list(result.params.crop), "flip": result.params.flip})
            return replace(
                sample, image=result.image, boxes=result.boxes, conversations=result.conversations, refiner=result.refiner, meta=meta
            )
        result = self.apply(sample.image, [], [{"from": "gpt", "value": sample.caption}], sample.refiner, rng)
        meta = dict(sample.meta, augment={"crop": list(result.params.crop), "flip": result.params.flip})
        return replace(sample, image=result.image, caption=result.conversations[0]["value"], refiner=result.refiner, meta=meta)
