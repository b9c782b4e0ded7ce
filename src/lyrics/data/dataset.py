"""`InstructionDataset`: instruction records -> typed samples (image, conversation, boxes, refiner record).

Map-style, for stage 2. A sample whose image is missing or corrupt (or whose refiner record is
missing from the store) never crashes an epoch: it is recorded in `dataset.skipped` and the next
loadable sample (index + 1, + 2, ... wrapping) is returned in its place, so batch sizes and the
sampler's bookkeeping stay unchanged. With DataLoader workers each worker keeps its own skip list;
call `drop_unloadable()` before training to find bad images up front in the main process.

Tokenisation and collation are not done here (the model side owns them); `sample.rendered(fmt)`
gives the conversation with box placeholders written as coordinates.

Randomness: a transform gets a `random.Random` seeded by (seed, epoch, index), so the same sample in
the same epoch is augmented identically regardless of worker, rank or resume.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image
from torch.utils.data import Dataset

from lyrics.data.images import ImageError, load_image
from lyrics.data.io import stable_rng
from lyrics.data.records import InstructionRecord, RecordFile, SkippedRecord, load_records, render_conversation
from lyrics.refiner.record import RefinerRecord
from lyrics.refiner.spatial import Box


class RefinerStore(Protocol):
    """What the datasets need from a refiner feature store (`lyrics.refiner.store`, or a dict)."""

    def get(self, image_id: str) -> RefinerRecord | None: ...


@dataclass
class InstructionSample:
    """One loaded sample.

    Args:
        image: RGB PIL image (EXIF-corrected; after `transform`, e.g. 224 x 224), None for text.
        conversations: turns `{"from", "value"}` with `<box:i>` placeholders still in the text.
        boxes: normalised xyxy boxes the placeholders index.
        refiner: the image's refiner record (objects, spatial text, `(K, D)` local features) or None.
    """

    id: str
    task: str
    image: Image.Image | None
    conversations: list[dict[str, str]]
    boxes: list[Box]
    refiner: RefinerRecord | None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    index: int = -1
    image_key: str | None = None  # the refiner-store / feature-cache key: `refiner`, else the image path

    def rendered(self, coordinate_format: str = "int1000") -> list[dict[str, str]]:
        """The conversation with placeholders written as `<Bbox>(x1,y1),(x2,y2)</Box>`."""
        return render_conversation({"conversations": self.conversations, "boxes": self.boxes}, coordinate_format)


Transform = Callable[[InstructionSample, random.Random], InstructionSample]


@dataclass
class SkippedSample:
    index: int
    id: str
    reason: str


class MissingRefinerRecord(Exception):
    """The refiner store has no record for a sample's image (the sample is skipped, not fatal)."""

    def __init__(self, key: str):
        super().__init__(f"no refiner record for {key!r}")
        self.reason = str(self)


def lookup_refiner(store: Any, key: str) -> RefinerRecord | None:
    """`store.get(key)`, with None for a missing key whether the store returns None or raises KeyError."""
    try:
        return store.get(key)
    except KeyError:
        return None


class SkippingDataset(Dataset):
    """Map-style base: `__getitem__(i)` returns `load(i)`, or, when sample i cannot be loaded
    (`ImageError` / `MissingRefinerRecord`), records it once in `skipped` and returns the next
    loadable sample. Any other exception is a bug and propagates."""

    def __init__(self) -> None:
        self._skipped: dict[int, SkippedSample] = {}

    def load(self, index: int) -> Any:
        raise NotImplementedError

    def sample_id(self, index: int) -> str:
        return str(index)

    @property
    def skipped(self) -> list[SkippedSample]:
        """Samples that could not be loaded (once each, in index order)."""
        return [self._skipped[i] for i in sorted(self._skipped)]

    def __getitem__(self, index: int) -> Any:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        for step in range(n):
            i = (index + step) % n
            if i in self._skipped:
                continue
            try:
                return self.load(i)
            except (ImageError, MissingRefinerRecord) as exc:
                self._skipped[i] = SkippedSample(i, self.sample_id(i), exc.reason)
        raise RuntimeError(f"no loadable sample among the {n} samples (see dataset.skipped)")


class InstructionDataset(SkippingDataset):
    """Map-style dataset over instruction records.

    Args:
        records: record file path(s) (loaded with bad records skipped, see `invalid_records`), a
            `RecordFile`, or a sequence of `InstructionRecord`.
        image_root: folder the records' `image` paths are relative to.
        refiner_store: object with `get(image_id) -> RefinerRecord` (a dict works); the key is the
            record's `refiner` field, else its `image` path.
        transform: `transform(sample, rng) -> sample`, e.g. `lyrics.data.augment.BoxAwareAugment`.
        seed: seed of the per-sample transform randomness.
    """

    def __init__(
        self,
        records: str | os.PathLike | Sequence[str | os.PathLike] | RecordFile | Sequence[InstructionRecord],
        image_root: str | os.PathLike | None = None,
        refiner_store: RefinerStore | None = None,
        transform: Transform | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.invalid_records: list[SkippedRecord] = []
        self.records = self._load(records)
        self.image_root = Path(image_root) if image_root is not None else None
        self.refiner_store = refiner_store
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def _load(self, records: Any) -> list[InstructionRecord]:
        if isinstance(records, (str, os.PathLike)):
            records = [records]
        if isinstance(records, RecordFile):
            self.invalid_records.extend(records.skipped)
            return list(records.records)
        records = list(records)
        if records and all(isinstance(r, (str, os.PathLike)) for r in records):
            loaded: list[InstructionRecord] = []
            for path in records:
                file = load_records(path, skip_invalid=True)
                self.invalid_records.extend(file.skipped)
                loaded.extend(file.records)
            return loaded
        for i, r in enumerate(records):
            if not isinstance(r, InstructionRecord):
                raise TypeError(f"records[{i}] is a {type(r).__name__}, not an InstructionRecord")
        return records

    def sample_id(self, index: int) -> str:
        return self.records[index].id

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, record: InstructionRecord) -> Path | None:
        if record.image is None:
            return None
        return (self.image_root / record.image) if self.image_root is not None else Path(record.image)

    def load(self, index: int) -> InstructionSample:
        """Load sample `index` without substitution; raises ImageError / MissingRefinerRecord for a bad sample."""
        record = self.records[index]
        path = self.image_path(record)
        image = load_image(path) if path is not None else None
        refiner = None
        if self.refiner_store is not None and record.image is not None:
            key = record.refiner or record.image
            refiner = lookup_refiner(self.refiner_store, key)
            if refiner is None:
                raise MissingRefinerRecord(key)
        sample = InstructionSample(
            id=record.id,
            task=record.task,
            image=image,
            conversations=[dict(t) for t in record.conversations],
            boxes=list(record.boxes),
            refiner=refiner,
            source=record.source,
            meta=dict(record.meta),
            index=index,
            image_key=record.refiner or record.image,
        )
        if self.transform is not None:
            sample = self.transform(sample, stable_rng(self.seed, self.epoch, index))
        return sample

    def drop_unloadable(self, decode: bool = False, threads: int = 8) -> list[SkippedSample]:
        """Remove records whose image is missing (or, with `decode`, does not decode); return them."""

        def check(i: int) -> SkippedSample | None:
            path = self.image_path(self.records[i])
            if path is None:
                return None
            try:
                if decode:
                    load_image(path)
                elif not path.is_file():
                    return SkippedSample(i, self.records[i].id, "file not found")
            except ImageError as exc:
                return SkippedSample(i, self.records[i].id, exc.reason)
            return None

        with ThreadPoolExecutor(max_workers=threads) as pool:
            bad = [s for s in pool.map(check, range(len(self.records))) if s is not None]
        bad_ids = {s.index for s in bad}
        self.records = [r for i, r in enumerate(self.records) if i not in bad_ids]
        self._skipped = {}
        return bad


__all__ = ["InstructionDataset", "InstructionSample", "SkippedSample", "SkippingDataset", "RefinerStore", "Transform", "lookup_refiner", "MissingRefinerRecord"]
