"""A cache of frozen image-encoder features, so small runs (the toy world, ablations that share the
encoder) compute them once.

The image encoder is frozen in both stages (paper section 4), so its output for a fixed image never
changes; caching trades disk for compute. It excludes image augmentation (a crop changes the pixels):
recipes turn augmentation off when `data.image_features` is given. At paper scale (257 x 1024 per
image) features are computed on the fly instead.

Layout: `shard-00000.safetensors` ... (one tensor per image key) and `index.json` {key: shard file},
written atomically shard by shard.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lyrics.atomic import atomic_path, atomic_write_text


class FeatureCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        index = self.root / "index.json"
        if not index.is_file():
            raise FileNotFoundError(f"{self.root}: not an image-feature cache (no index.json)")
        self.index: dict[str, str] = json.loads(index.read_text())
        self._handles: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, key: object) -> bool:
        return key in self.index

    def get(self, key: str) -> torch.Tensor:
        """`(N, D)` float32 features of image `key`."""
        shard = self.index.get(key)
        if shard is None:
            raise KeyError(f"{self.root}: no cached features for image {key!r}")
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.root / shard), framework="pt")
        return self._handles[shard].get_tensor(key).float()


@torch.no_grad()
def cache_image_features(
    encoder: torch.nn.Module,
    image_processor,
    items: Iterable[tuple[str, object]],
    root: str | Path,
    batch_size: int = 32,
    shard_size: int = 1024,
    dtype: torch.dtype = torch.float16,
) -> FeatureCache:
    """Encode `(key, PIL image)` items into a cache at `root`; keys already cached are skipped, so an
    interrupted run resumes."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    index_path = root / "index.json"
    index: dict[str, str] = json.loads(index_path.read_text()) if index_path.is_file() else {}
    shard_id = len({*index.values()})
    pending: dict[str, torch.Tensor] = {}
    batch: list[tuple[str, object]] = []

    def flush_batch() -> None:
        pixels = image_processor(images=[img for _, img in batch], return_tensors="pt")["pixel_values"]
        feats = encoder(pixels.to(next(encoder.parameters()).device)).to(dtype).cpu()
        for (key, _), feat in zip(batch, feats):
            pending[key] = feat.contiguous()
        batch.clear()

    def flush_shard() -> None:
        nonlocal shard_id
        name = f"shard-{shard_id:05d}.safetensors"
        with atomic_path(root / name) as tmp:
            save_file(dict(pending), str(tmp))
        index.update({key: name for key in pending})
        atomic_write_text(index_path, json.dumps(index))
        pending.clear()
        shard_id += 1

    for key, image in items:
        if key in index or key in pending or any(key == k for k, _ in batch):
            continue
        batch.append((key, image))
        if len(batch) == batch_size:
            flush_batch()
        if len(pending) >= shard_size:
            flush_shard()
    if batch:
        flush_batch()
    if pending:
        flush_shard()
    if not index_path.is_file():
        index_path.write_text("{}")
    return FeatureCache(root)
