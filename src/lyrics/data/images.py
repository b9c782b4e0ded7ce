"""Image loading for the training datasets: RGB, EXIF-corrected, and a typed error for bad files.

Boxes in records and refiner records refer to the EXIF-corrected image (the refiner applies
`ImageOps.exif_transpose` too), so every loader here does the same. A missing, truncated or
undecodable file raises `ImageError` with a short reason; the datasets catch it, skip the sample and
record the reason instead of crashing mid-epoch.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps

# EXIF orientations 5-8 rotate by 90 degrees, so width and height swap.
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}


class ImageError(Exception):
    """An image that cannot be used; `reason` is a short human-readable cause."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode `path` fully into an RGB image with EXIF rotation applied.

    Raises `ImageError` for a missing file, a decompression bomb, or any decoding failure
    (truncated data, not an image). Decoding happens here (`.load()`), not lazily later.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(path, "file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
                return img.convert("RGB")
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(path, f"too many pixels ({exc})") from None
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError ...) for bad data
        raise ImageError(path, f"cannot decode image: {type(exc).__name__}: {exc}") from None


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


def decode_image_bytes(data: bytes, name: str = "<bytes>") -> Image.Image:
    """Like `load_image` for in-memory bytes (webdataset shards)."""
    import io

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
                return img.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(name, f"too many pixels ({exc})") from None
    except Exception as exc:
        raise ImageError(name, f"cannot decode image: {type(exc).__name__}: {exc}") from None
