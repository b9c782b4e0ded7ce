"""Streaming image-caption pairs from webdataset tar shards in img2dataset layout (stage 1 at scale).

Each shard `NNNNN.tar` holds, per sample, `KEY.jpg` (or .png / .webp), `KEY.txt` (the caption) and
`KEY.json` (img2dataset metadata: url, caption, width, height, ...). Shards are read with
webdataset's tar iterator (no decoding pipeline: images are decoded here so a bad one can be
skipped and counted).

Sharding. Every (rank, DataLoader worker) pair is one consumer; rank and world size come from
torch.distributed when initialised, else from the arguments. With at least as many shards as
consumers, consumer c reads shards c, c + C, ... (C consumers); with fewer shards, every consumer
reads all shards and keeps samples j with j % C == c. Either way no sample is read by two
consumers. Shard order can be shuffled per epoch with `shuffle_seed` (`set_epoch`). Ranks may get
different sample counts when shard sizes differ; train stage 1 by steps.

Bad data never stops the stream: undecodable images, missing captions, unreadable or truncated
shards, and missing refiner records (when a store is given) are skipped and counted in `stats`
(per process: each worker counts its own).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from torch.utils.data import IterableDataset

from lyrics.data.dataset import RefinerStore, lookup_refiner
from lyrics.data.images import ImageError, decode_image_bytes
from lyrics.data.io import stable_rng, stable_seed
from lyrics.data.pairs import CaptionPair, PairTransform
from lyrics.data.sharding import distributed_rank_world, worker_id_count

logger = logging.getLogger(__name__)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def expand_shards(shards: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """A list of shard paths from a list, a glob (`data/*.tar`) or a brace pattern (`{00000..00009}.tar`)."""
    if isinstance(shards, (str, os.PathLike)):
        pattern = str(shards)
        if "{" in pattern:
            from webdataset.shardlists import expand_urls

            found = expand_urls(pattern)
        elif any(ch in pattern for ch in "*?["):
            found = sorted(glob.glob(pattern))
        else:
            found = [pattern]
    else:
        found = [str(s) for s in shards]
    if not found:
        raise FileNotFoundError(f"no shards match {shards!r}")
    return found


class WebDatasetPairs(IterableDataset):
    """Iterable (image, caption) pairs from img2dataset tar shards; see the module docstring.

    Args:
        shards: shard paths, a glob or a brace pattern.
        refiner_store: `get(key) -> RefinerRecord`, joined by the sample's `__key__`.
        transform: `transform(pair, rng) -> pair`; rng is seeded by (seed, epoch, key).
        rank, world_size: used when torch.distributed is not initialised.
        shuffle_seed: shuffle the shard order per epoch (None keeps the given order).
        split: "auto", "shards" or "samples" (how consumers share the data).
    """

    def __init__(
        self,
        shards: str | os.PathLike | Sequence[str | os.PathLike],
        refiner_store: RefinerStore | None = None,
        transform: PairTransform | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        shuffle_seed: int | None = None,
        split: str = "auto",
        seed: int = 0,
    ):
        if split not in ("auto", "shards", "samples"):
            raise ValueError(f"split must be 'auto', 'shards' or 'samples', got {split!r}")
        self.shards = expand_shards(shards)
        self.refiner_store = refiner_store
        self.transform = transform
        self.rank, self.world_size = rank, world_size
        self.shuffle_seed = shuffle_seed
        self.split = split
        self.seed = seed
        self.epoch = 0
        self.stats: Counter = Counter()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def consumer(self) -> tuple[int, int]:
        """(this consumer's id, number of consumers) = (rank * workers + worker, world * workers)."""
        rank, world = distributed_rank_world(self.rank, self.world_size)
        worker, workers = worker_id_count()
        return rank * workers + worker, world * workers

    def plan(self) -> tuple[list[str], int, int]:
        """(shards this consumer reads, sample stride, sample offset) for the current epoch."""
        shards = list(self.shards)
        if self.shuffle_seed is not None:
            random.Random(stable_seed(self.shuffle_seed, "shards", self.epoch)).shuffle(shards)
        cid, consumers = self.consumer()
        by_shard = self.split == "shards" or (self.split == "auto" and len(shards) >= consumers)
        if by_shard:
            return shards[cid::consumers], 1, 0
        return shards, consumers, cid

    def _handler(self, exc: Exception) -> bool:
        self.stats["read_errors"] += 1
        logger.warning("skipping unreadable shard data: %s", exc)
        return True

    def _decode(self, raw: dict[str, Any]) -> CaptionPair | None:
        key = raw.get("__key__", "?")
        image_key = next((k for k in IMAGE_KEYS if k in raw), None)
        if image_key is None:
            self.stats["no_image"] += 1
            return None
        try:
            image = decode_image_bytes(raw[image_key], f"{raw.get('__url__')}:{key}.{image_key}")
        except ImageError as exc:
            self.stats["corrupt_image"] += 1
            logger.warning("skipping %s", exc)
            return None
        meta: dict[str, Any] = {}
        if "json" in raw:
            try:
                meta = json.loads(raw["json"].decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                self.stats["bad_json"] += 1
                meta = {}
        caption = None
        if "txt" in raw:
            try:
                caption = raw["txt"].decode("utf-8").strip()
            except UnicodeDecodeError:
                caption = None
        if not caption and isinstance(meta.get("caption"), str):
            caption = meta["caption"].strip()
        if not caption:
            self.stats["no_caption"] += 1
            return None
        meta["__url__"] = raw.get("__url__")
        return CaptionPair(key, image, caption, None, meta)

    def __iter__(self) -> Iterator[CaptionPair]:
        import webdataset as wds

        shards, stride, offset = self.plan()
        stream = wds.tarfile_samples([{"url": s} for s in shards], handler=self._handler)
        for j, raw in enumerate(stream):
            if j % stride != offset:
                continue
            pair = self._decode(raw)
            if pair is None:
                continue
            if self.refiner_store is not None:
                pair.refiner = lookup_refiner(self.refiner_store, pair.key)
                if pair.refiner is None:
                    self.stats["missing_refiner"] += 1
                    continue
            if self.transform is not None:
                pair = self.transform(pair, stable_rng(self.seed, self.epoch, pair.key))
            self.stats["yielded"] += 1
            yield pair
