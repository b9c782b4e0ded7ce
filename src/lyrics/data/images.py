"""Image loading for the training datasets: RGB, EXIF-corrected, and a typed error for bad files.

Boxes in records and refiner records refer to the EXIF-corrected image (the refiner applies
`ImageOps.exif_transpose` too), so every loader here does the same. A missing, truncated or
undecodable file raises `ImageError` with a short reason; the datasets catch it, skip the sample and
record the reason instead of crashing mid-epoch.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from lyrics.refiner.images import load_image as _decode

# Training data is curated: the limit only guards against decompression bombs (PIL's own is 89M).
MAX_PIXELS = 178_956_970

# EXIF orientations 5-8 rotate by 90 degrees, so width and height swap.
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}


class ImageError(Exception):
    """An image that cannot be used; `reason` is a short human-readable cause."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode `path` fully into an RGB image with EXIF rotation applied (the refiner's decoder,
    `lyrics.refiner.images.load_image`, so training sees the pixels the refiner saw).

    Raises `ImageError` for a missing file, too many pixels, or any decoding failure.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(path, "file not found")
    loaded = _decode(path, max_pixels)
    if not loaded.ok:
        raise ImageError(path, loaded.reason)
    return loaded.image


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the EXIF-corrected image, reading only the header."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(path, "file not found")
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112)
    except Exception as exc:
        raise ImageError(path, f"cannot read image header: {type(exc).__name__}: {exc}") from None
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)


def decode_image_bytes(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Like `load_image` for in-memory bytes (webdataset shards)."""
    loaded = _decode(data, max_pixels)
    if not loaded.ok:
        raise ImageError(name, loaded.reason)
    return loaded.image
