"""COCO run-length encoding of binary masks, through pycocotools (the COCO API's own C encoder).

Masks are stored with each object as COCO-style RLE, `{"size": [h, w], "counts": str}`, the format
every COCO tool reads. `decode` also takes the uncompressed form (`counts` a list of run lengths, as in
COCO's crowd annotations).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as coco_mask


def _compressed(rle: dict[str, Any]) -> dict[str, Any]:
    """The pycocotools form (`counts` bytes) of a compressed or uncompressed RLE, checked."""
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (list, tuple)):
        counts = [int(c) for c in counts]
        if sum(counts) != height * width or any(c < 0 for c in counts):
            raise ValueError(f"RLE counts sum to {sum(counts)}, expected {height * width} for size {height}x{width}")
        return coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [height, width], "counts": counts}


def encode(mask: np.ndarray) -> dict[str, Any]:
    """`(H, W)` boolean mask -> `{"size": [H, W], "counts": str}` (compressed, JSON-ready)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"RLE encodes 2-D masks, got shape {mask.shape}")
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (compressed string or uncompressed list of counts) -> `(H, W)` boolean mask."""
    return coco_mask.decode(_compressed(rle)).astype(bool)


def area(rle: dict[str, Any]) -> int:
    """Foreground pixels of a COCO RLE."""
    return int(coco_mask.area(_compressed(rle)))
