"""The visual refiner: tagger -> detector -> segmenter, turned into `RefinerRecord`s (paper section 3.1).

    tags    = tagger(images)                              "what is there"
    objects = top-K(NMS(detector(images, tags)))          "where": boxes prompted by the tags
    masks   = segmenter(images, boxes of objects)         "which pixels": masks prompted by the boxes

Per image the record holds the tags, the kept objects (tag, score, pixel and normalised xyxy box,
RLE mask), the textual spatial representation (`spatial.format_spatial` in the configured coordinate
format and style), and the `(K, D)` local features, one row per object:

    [ detection feature (detection_feature_size) | box (box_feature_size) | segmentation feature ]

The box part is the normalised (cx, cy, w, h) of the object, the convention of Grounding-DINO's
`pred_boxes` and of the released code's reference boxes. With segmenter "none" the row is 256 + 4 =
260 as in the released code; with SAM-HQ it is 256 + 4 + 256 = 516 (paper preset).

`VisualRefiner.from_config(RefinerConfig)` builds the backends the config names (`backends` says what
each name means); any stage can also be passed in directly (any object with the `stages` protocol).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from lyrics.configuration import RefinerConfig
from lyrics.refiner import backends, rle
from lyrics.refiner.detection import select_detections
from lyrics.refiner.record import RefinedObject, RefinerRecord
from lyrics.refiner.spatial import Box, box_from_pixels, format_spatial
from lyrics.refiner.stages import BackendError, Detection, Detector, Segment, Segmenter, Tagger


def box_feature(box_norm: Box) -> torch.Tensor:
    """Normalised xyxy -> `(4,)` normalised (cx, cy, w, h)."""
    x1, y1, x2, y2 = box_norm
    return torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dtype=torch.float32)


def build_stages(config: RefinerConfig, device: str | torch.device = "cpu") -> tuple[Tagger, Detector, Segmenter]:
    """Instantiate the tagger, detector and segmenter named by `config` (models load here); what each
    name means is `backends`' table, plug-ins such as the toy world's "toy" included."""
    shared: dict[str, object] = {}
    tagger, detector, segmenter = (backends.factory(stage, getattr(config, stage))(config, device, shared) for stage in backends.STAGES)
    return tagger, detector, segmenter


class VisualRefiner:
    """Tagger -> detector -> segmenter over a batch of images, producing `RefinerRecord`s.

    Args:
        config: the `RefinerConfig` (thresholds, K, feature layout, text format).
        tagger, detector, segmenter: the stages; `from_config` builds them from the config.
    """

    def __init__(self, config: RefinerConfig, tagger: Tagger, detector: Detector, segmenter: Segmenter) -> None:
        self.config = config
        self.tagger, self.detector, self.segmenter = tagger, detector, segmenter
        for stage, field, configured in (
            (detector, "detection_feature_size", config.detection_feature_size),
            (segmenter, "segmentation_feature_size", config.segmentation_feature_size),
        ):
            size = getattr(stage, "feature_size", configured)
            if size != configured:
                raise BackendError(f"{type(stage).__name__} makes {size}-d features but RefinerConfig.{field}={configured}")

    @classmethod
    def from_config(cls, config: RefinerConfig, device: str | torch.device = "cpu") -> "VisualRefiner":
        return cls(config, *build_stages(config, device))

    @property
    def feature_dim(self) -> int:
        return self.config.local_feature_size

    def __call__(
        self,
        images: Sequence[Image.Image],
        image_ids: Sequence[str] | None = None,
        given_tags: Sequence[Sequence[str] | None] | None = None,
    ) -> list[RefinerRecord]:
        """Refine a batch.

        Args:
            images: RGB images (already EXIF-corrected, see `images.load_image`).
            image_ids: the records' ids; defaults to "0", "1", ...
            given_tags: per-image tags for tagger "given" (ignored by the other taggers).

        Returns:
            One `RefinerRecord` per image, in order.
        """
        images = list(images)
        ids = [str(i) for i in range(len(images))] if image_ids is None else [str(i) for i in image_ids]
        if len(ids) != len(images):
            raise ValueError(f"got {len(images)} images but {len(ids)} image ids")
        tagged = self.tagger.tag(images, given_tags)
        tags = [[tag for tag, _ in image_tags] for image_tags in tagged]
        candidates = self.detector.detect(images, tags)
        kept = [
            select_detections(found, self.config.nms_iou, self.config.max_objects, self.config.class_agnostic_nms)
            for found in candidates
        ]
        segments = self.segmenter.segment(images, [[d.box for d in dets] for dets in kept])
        return [
            self._record(image_id, image, image_tags, dets, segs)
            for image_id, image, image_tags, dets, segs in zip(ids, images, tagged, kept, segments)
        ]

    def refine(self, image: Image.Image, image_id: str = "0", tags: Sequence[str] | None = None) -> RefinerRecord:
        """One image (live inference)."""
        return self([image], [image_id], [tags] if tags is not None else None)[0]

    def _record(
        self,
        image_id: str,
        image: Image.Image,
        tagged: list[tuple[str, float]],
        detections: list[Detection],
        segments: list[Segment],
    ) -> RefinerRecord:
        cfg = self.config
        width, height = image.size
        objects, rows = [], []
        for det, seg in zip(detections, segments):
            box = tuple(float(v) for v in det.box)
            box_norm = box_from_pixels(box, width, height)
            mask_rle = rle.encode(seg.mask) if seg.mask is not None else None
            objects.append(RefinedObject(det.tag, float(det.score), box, box_norm, mask_rle))  # type: ignore[arg-type]
            parts = [det.feature.float().reshape(-1)]
            if cfg.box_feature_size:
                parts.append(box_feature(box_norm))
            parts.append(seg.feature.float().reshape(-1))
            row = torch.cat(parts)
            if row.numel() != cfg.local_feature_size:
                raise BackendError(f"local feature of {image_id} has {row.numel()} values, expected {cfg.local_feature_size}")
            rows.append(row)
        features = torch.stack(rows) if rows else torch.zeros(0, cfg.local_feature_size)
        spatial_text = format_spatial(((o.tag, o.box_norm) for o in objects), cfg.coordinate_format, cfg.spatial_format)
        return RefinerRecord(
            image_id=image_id,
            width=width,
            height=height,
            tags=[tag for tag, _ in tagged],
            objects=objects,
            spatial_text=spatial_text,
            local_features=features,
            meta={"tag_scores": [round(float(score), 6) for _, score in tagged]},
        )
