"""Image-caption pairs for stage 1 (representation alignment), map-style from COCO-format captions.

(The streaming counterpart over webdataset tar shards is `lyrics.data.webdata`; both yield
`CaptionPair`.) One item per (image, caption); a missing or corrupt image, or a missing refiner
record when a store is given, is skipped and recorded (`dataset.skipped`), never a crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from lyrics.data.dataset import MissingRefinerRecord, RefinerStore, SkippingDataset, lookup_refiner
from lyrics.data.images import load_image
from lyrics.data.io import stable_rng
from lyrics.data.official.captions import read_coco_captions
from lyrics.refiner.record import RefinerRecord


@dataclass
class CaptionPair:
    """One image with one caption.

    Args:
        key: the sample's identity (webdataset `__key__`, or the image path relative to the root);
            also the key refiner records are looked up by.
        image: RGB PIL image (after `transform`, if any).
        refiner: the image's RefinerRecord, or None without a store.
        meta: per-sample metadata (img2dataset's `KEY.json`, or COCO ids).
    """

    key: str
    image: Image.Image
    caption: str
    refiner: RefinerRecord | None = None
    meta: dict[str, Any] = field(default_factory=dict)


PairTransform = Callable[[CaptionPair, Any], CaptionPair]


class CocoCaptionPairs(SkippingDataset):
    """Map-style (image, caption) pairs from a COCO-format caption file.

    Args:
        captions: `captions_*.json` (or its folder, with `split`).
        image_root: the image folder the file's `file_name`s are relative to.
        refiner_store: `get(image_id) -> RefinerRecord`; the key is `file_name` (the path relative
            to the image root, the refiner store's image_id convention).
        transform: `transform(pair, rng) -> pair` (e.g. `BoxAwareAugment`); rng is seeded by
            (seed, epoch, index).
    """

    def __init__(
        self,
        captions: str | os.PathLike,
        image_root: str | os.PathLike,
        refiner_store: RefinerStore | None = None,
        transform: PairTransform | None = None,
        seed: int = 0,
        split: str | None = None,
    ):
        super().__init__()
        self.image_root = Path(image_root)
        self.items: list[tuple[str, Path, str, Any]] = []
        for sample in read_coco_captions(captions, self.image_root, split):
            key = Path(os.path.relpath(sample.image_path, self.image_root)).as_posix()
            for caption in sample.captions:
                self.items.append((key, sample.image_path, caption, sample.image_id))
        self.refiner_store = refiner_store
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def sample_id(self, index: int) -> str:
        return f"{self.items[index][0]}#{index}"

    def load(self, index: int) -> CaptionPair:
        key, path, caption, image_id = self.items[index]
        image = load_image(path)
        refiner = None
        if self.refiner_store is not None:
            refiner = lookup_refiner(self.refiner_store, key)
            if refiner is None:
                raise MissingRefinerRecord(key)
        pair = CaptionPair(key, image, caption, refiner, {"image_id": image_id})
        if self.transform is not None:
            pair = self.transform(pair, stable_rng(self.seed, self.epoch, index))
        return pair
