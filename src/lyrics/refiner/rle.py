"""COCO run-length encoding of binary masks, in numpy.

Masks are stored with each object as COCO-style RLE, `{"size": [h, w], "counts": str}`, the format
every COCO tool reads. pycocotools is not a runtime dependency of `lyrics` (it needs a C build), so
the encoder and decoder are written here; the tests compare them with pycocotools where it is
installed.

The format: the mask is read in column-major (Fortran) order; `counts` alternates runs of 0s and 1s
starting with 0s (a mask starting with 1 has a leading zero-length run). The compressed string writes
each count, from the third on as the difference to the count two places before, in 5-bit groups
(least significant first), each group as `chr(48 + group)` with bit 0x20 meaning "more groups follow"
and bit 0x10 of the last group carrying the sign.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def mask_to_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO run lengths of a 2-D mask (column-major, starting with a run of 0s)."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    return [int(r) for r in runs]


def counts_to_string(counts: list[int]) -> str:
    """Compress run lengths into COCO's ASCII form (see the module docstring)."""
    chars: list[str] = []
    for i, count in enumerate(counts):
        value = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            group = value & 0x1F
            value >>= 5  # arithmetic shift: negative values end at -1
            more = value != -1 if group & 0x10 else value != 0
            if more:
                group |= 0x20
            chars.append(chr(group + 48))
    return "".join(chars)


def string_to_counts(text: str) -> list[int]:
    """Inverse of `counts_to_string`."""
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                raise ValueError("truncated RLE string")
            group = ord(text[pos]) - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            pos += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def encode(mask: np.ndarray) -> dict[str, Any]:
    """`(H, W)` boolean mask -> `{"size": [H, W], "counts": str}`."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"RLE encodes 2-D masks, got shape {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts_to_string(mask_to_counts(mask))}


def decode(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (compressed string or uncompressed list of counts) -> `(H, W)` boolean mask."""
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        counts = string_to_counts(counts)
    counts = [int(c) for c in counts]
    if sum(counts) != height * width or any(c < 0 for c in counts):
        raise ValueError(f"RLE counts sum to {sum(counts)}, expected {height * width} for size {height}x{width}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((height, width), order="F")


def area(rle: dict[str, Any]) -> int:
    counts = rle["counts"]
    counts = string_to_counts(counts) if isinstance(counts, str) else counts
    return int(sum(counts[1::2]))
