"""The refiner's sharded feature store: what `lyrics refine` writes and training reads.

Layout of a store directory:

    store.json                 identity: the refiner config that made the store (every RefinerConfig
                               field but batch_size), feature layout, input fingerprint, sharding
    shards/00000.jsonl         the JSONL index: one `RefinerRecord.metadata()` per line, in input order
    shards/00000.safetensors   local features: "features" (sum of K, D) and "offsets" (N + 1,) int64
    shards/00000.tar           ... or, with store_format="webdataset", one tar shard per index shard
                               holding `<key>.json` and `<key>.features.safetensors` per image
    shards/00000.errors.jsonl  images of this shard that were rejected: {"image": id, "reason": str}
    errors.jsonl               all finished shards' errors, rewritten at the end of a job

A shard is the unit of atomicity. Every file is written to a temporary name, flushed to disk and moved
into place with `os.replace`; the index `.jsonl` is moved last, so a shard exists exactly when its
index exists, and a crash leaves at most temporary files that the next run of the same shard
removes. Shards are numbered over the whole input, so several ranks or machines can fill one store.

Features are stored with safetensors (no pickle) in `RefinerConfig.feature_dtype`.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from lyrics.atomic import atomic_write_bytes, atomic_write_text
from lyrics.refiner.record import RefinerRecord

STORE_VERSION = 1
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class StoreError(RuntimeError):
    """The store on disk is missing, damaged or belongs to another job."""


# -------------------------------------------------------------------------------- atomic writes
def _unique() -> str:
    """Temporary-name suffix unique across processes and machines sharing one store directory (the
    manifest's first-writer-wins `os.link`; every other file goes through `lyrics.atomic`)."""
    return f"{os.getpid()}.{uuid.uuid4().hex[:12]}"


def jsonl(rows: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def shard_name(index: int) -> str:
    return f"{index:05d}"


# -------------------------------------------------------------------------------------- writing
@dataclass
class StoreLayout:
    """Paths of a store directory (shared by the writer and the reader)."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "store.json"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def errors(self) -> Path:
        return self.root / "errors.jsonl"

    def index(self, shard: int) -> Path:
        return self.shards / f"{shard_name(shard)}.jsonl"

    def features(self, shard: int, store_format: str) -> Path:
        return self.shards / f"{shard_name(shard)}.{'tar' if store_format == 'webdataset' else 'safetensors'}"

    def shard_errors(self, shard: int) -> Path:
        return self.shards / f"{shard_name(shard)}.errors.jsonl"

    def done(self, shard: int) -> bool:
        return self.index(shard).is_file()

    def clean_partial(self, shard: int) -> None:
        """Remove what an interrupted attempt at `shard` left behind (temporary files only)."""
        for tmp in self.shards.glob(f"{shard_name(shard)}.*.tmp.*"):
            tmp.unlink(missing_ok=True)


def prepare_store(root: str | Path, info: dict[str, Any]) -> None:
    """Create `store.json` with `info`, or check that an existing store was started with the same
    `info` (same config, layout and inputs) so that a restart can never mix two jobs' shards.

    Creation is atomic and first-writer-wins (`os.link` of a complete temporary file), so ranks
    starting together agree on one manifest.
    """
    layout = StoreLayout(Path(root))
    layout.shards.mkdir(parents=True, exist_ok=True)
    info = {"version": STORE_VERSION, **info}
    if not layout.manifest.exists():
        tmp = layout.manifest.with_name(f"store.json.tmp.{_unique()}")
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        try:
            os.link(tmp, layout.manifest)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    try:
        existing = json.loads(layout.manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StoreError(f"{layout.manifest}: invalid JSON ({exc})") from exc
    different = _differences(existing, info)
    if different:
        raise StoreError(
            f"{layout.root} was started by a different job (differs in: {'; '.join(different)}; store value first); "
            "resume with the same input and settings, or write to a new --out"
        )


def _differences(existing: dict[str, Any], info: dict[str, Any], prefix: str = "") -> list[str]:
    """`"key: old vs new"` for every differing key, naming the fields inside nested mappings
    (`refiner_config.tagger: 'toy' vs 'clip'`)."""
    out = []
    for key in sorted(set(info) | set(existing)):
        old, new = existing.get(key), info.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out.extend(_differences(old, new, f"{prefix}{key}."))
        elif json.dumps(old, sort_keys=True) != json.dumps(new, sort_keys=True):
            out.append(f"{prefix}{key}: {old!r} vs {new!r}")
    return out


def _wds_key(shard: int, row: int) -> str:
    # webdataset splits keys at the first "." and image ids contain dots and slashes: use positions.
    return f"s{shard:05d}r{row:06d}"


def write_shard(
    root: str | Path,
    shard: int,
    records: Sequence[RefinerRecord],
    errors: Sequence[dict[str, str]],
    store_format: str = "safetensors",
    feature_dtype: str = "float16",
    feature_dim: int | None = None,
) -> None:
    """Write one shard atomically (features, errors, then the index that marks it done)."""
    layout = StoreLayout(Path(root))
    layout.shards.mkdir(parents=True, exist_ok=True)
    dtype = DTYPES[feature_dtype]
    dim = feature_dim if feature_dim is not None else (records[0].local_features.shape[1] if records else 0)
    for record in records:
        if record.local_features.shape[1] != dim:
            raise StoreError(f"record {record.image_id} has {record.local_features.shape[1]}-d features, the store holds {dim}")
    features = [r.local_features.to(dtype).contiguous() for r in records]
    if store_format == "webdataset":
        buffer = io.BytesIO()
        import webdataset

        with webdataset.TarWriter(buffer, encoder=False, mtime=0.0) as sink:
            for row, (record, feats) in enumerate(zip(records, features)):
                sink.write(
                    {
                        "__key__": _wds_key(shard, row),
                        "json": json.dumps(record.metadata(), ensure_ascii=False, sort_keys=True).encode("utf-8"),
                        "features.safetensors": save_bytes({"features": feats}),
                    }
                )
        atomic_write_bytes(layout.features(shard, store_format), buffer.getvalue())
    else:
        counts = torch.tensor([0] + [f.shape[0] for f in features], dtype=torch.int64)
        tensors = {
            "features": torch.cat(features) if features else torch.zeros(0, dim, dtype=dtype),
            "offsets": torch.cumsum(counts, 0),
        }
        atomic_write_bytes(layout.features(shard, store_format), save_bytes(tensors, metadata={"shard": str(shard)}))
    atomic_write_text(layout.shard_errors(shard), jsonl(errors))
    atomic_write_text(layout.index(shard), jsonl([r.metadata() for r in records]))


def write_errors_summary(root: str | Path) -> int:
    """Rewrite `errors.jsonl` from every finished shard's errors; returns the number of lines."""
    layout = StoreLayout(Path(root))
    rows = []
    for path in sorted(layout.shards.glob("*.errors.jsonl")):
        if layout.index(int(path.name.split(".")[0])).is_file():
            rows.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    atomic_write_text(layout.errors, jsonl(rows))
    return len(rows)


# -------------------------------------------------------------------------------------- reading
class FeatureStore:
    """Read access to a store: `len`, iteration (records in input order), `get(image_id)`, `ids()`.

    Shards are read lazily: iteration streams shard by shard (one shard's index and features in
    memory at a time), and the first `get` / `in` builds an id -> (shard, row) map (ids only).
    Features come back as stored (`feature_dtype`); use `record.local_features.float()`, or
    `lyrics.models.processing.pad_local_features`, which converts.
    """

    ROW_CACHE = 8  # shards whose parsed index is kept for random access

    def __init__(self, root: str | Path) -> None:
        self.layout = StoreLayout(Path(root))
        if not self.layout.manifest.is_file():
            raise StoreError(f"{self.layout.root} is not a refiner store (no store.json)")
        try:
            self.info: dict[str, Any] = json.loads(self.layout.manifest.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise StoreError(f"{self.layout.manifest}: invalid JSON ({exc})") from exc
        self.store_format = self.info.get("store_format", "safetensors")
        self._shard_ids = sorted(
            int(path.name.split(".")[0]) for path in self.layout.shards.glob("*.jsonl") if not path.name.endswith(".errors.jsonl")
        )
        self._rows_cache: OrderedDict[int, list[dict[str, Any]]] = OrderedDict()
        self._where: dict[str, tuple[int, int]] | None = None
        self._length: int | None = None
        self._features_cache: tuple[int, Any] | None = None

    @property
    def feature_dim(self) -> int:
        return int(self.info["feature_dim"])

    @property
    def refiner_config(self) -> dict[str, Any]:
        return dict(self.info.get("refiner_config", {}))

    def shards(self) -> list[int]:
        return list(self._shard_ids)

    def __len__(self) -> int:
        if self._length is None:
            self._length = sum(
                sum(1 for line in self.layout.index(s).read_text(encoding="utf-8").splitlines() if line.strip()) for s in self._shard_ids
            )
        return self._length

    def __contains__(self, image_id: object) -> bool:
        return str(image_id) in self._index()

    def ids(self) -> list[str]:
        return list(self._index())

    def __iter__(self) -> Iterator[RefinerRecord]:
        for shard in self._shard_ids:
            rows = self._rows(shard)
            features = self._shard_features(shard, len(rows))
            for meta, feats in zip(rows, features):
                yield RefinerRecord.from_metadata(meta, feats)

    def _locate(self, image_id: str) -> tuple[int, int]:
        where = self._index().get(str(image_id))
        if where is None:
            raise KeyError(f"image {image_id!r} is not in the store {self.layout.root}")
        return where

    def get(self, image_id: str) -> RefinerRecord:
        shard, row = self._locate(image_id)
        return RefinerRecord.from_metadata(self._rows(shard)[row], self._row_features(shard, row))

    def spatial_text(self, image_id: str) -> str:
        """The image's textual spatial representation, read from the index alone (no features)."""
        shard, row = self._locate(image_id)
        return str(self._rows(shard)[row].get("spatial_text") or "")

    def errors(self) -> list[dict[str, str]]:
        """Rejected images of every finished shard, in input order."""
        out = []
        for shard in self._shard_ids:
            path = self.layout.shard_errors(shard)
            if path.is_file():
                out.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        return out

    # --------------------------------------------------------------------------------- internals
    def _index(self) -> dict[str, tuple[int, int]]:
        if self._where is None:
            where: dict[str, tuple[int, int]] = {}
            for shard in self._shard_ids:
                for row, meta in enumerate(self._parse(shard)):
                    where.setdefault(str(meta["image_id"]), (shard, row))
            self._where = where
        return self._where

    def _parse(self, shard: int) -> list[dict[str, Any]]:
        path = self.layout.index(shard)
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise StoreError(f"{path}:{number}: invalid JSON ({exc})") from exc
        return rows

    def _rows(self, shard: int) -> list[dict[str, Any]]:
        if shard in self._rows_cache:
            self._rows_cache.move_to_end(shard)
        else:
            self._rows_cache[shard] = self._parse(shard)
            if len(self._rows_cache) > self.ROW_CACHE:
                self._rows_cache.popitem(last=False)
        return self._rows_cache[shard]

    def _open(self, shard: int) -> Any:
        """The shard's features source, cached for the latest shard: a safetensors handle with its
        offsets, or the webdataset tar's members."""
        if self._features_cache is not None and self._features_cache[0] == shard:
            return self._features_cache[1]
        path = self.layout.features(shard, self.store_format)
        if not path.is_file():
            raise StoreError(f"{path} is missing but its index {self.layout.index(shard)} exists")
        if self.store_format == "webdataset":
            with tarfile.open(path) as tar:
                source: Any = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
        else:
            handle = safe_open(str(path), framework="pt")
            source = (handle, handle.get_tensor("offsets"))
        self._features_cache = (shard, source)
        return source

    def _row_features(self, shard: int, row: int) -> torch.Tensor:
        source = self._open(shard)
        if self.store_format == "webdataset":
            blob = source.get(f"{_wds_key(shard, row)}.features.safetensors")
            if blob is None:
                raise StoreError(f"{self.layout.features(shard, self.store_format)} has no features for row {row}")
            return load_bytes(blob)["features"]
        handle, offsets = source
        return handle.get_slice("features")[int(offsets[row]) : int(offsets[row + 1])]

    def _shard_features(self, shard: int, count: int) -> list[torch.Tensor]:
        """All rows' features of a shard, reading the features tensor once."""
        if self.store_format == "webdataset":
            return [self._row_features(shard, row) for row in range(count)]
        handle, offsets = self._open(shard)
        if len(offsets) != count + 1:
            raise StoreError(f"{self.layout.features(shard, self.store_format)} holds {len(offsets) - 1} rows, its index {count}")
        features = handle.get_tensor("features")
        return [features[int(offsets[r]) : int(offsets[r + 1])] for r in range(count)]


def open_store(path: str | Path) -> FeatureStore:
    """Open a store written by `lyrics refine` for reading."""
    return FeatureStore(path)
