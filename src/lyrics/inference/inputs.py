"""What every inference surface accepts from a caller: the request error, and safe image decoding.

`InputError` is the one error for bad input (the server answers it with 400 and its `param`, the
chat and the web demo print it, the pipeline raises it). Every image that reaches the model passes
`decode_image` or `open_image`: the encoded bytes' pixel count and aspect ratio are checked from the
header *before* a pixel is decoded (a decompression bomb costs a few bytes of reading), then mode and
EXIF orientation are normalised exactly as the refiner's batch job does
(`lyrics.refiner.images.to_rgb`), so an answer sees the same pixels as training did.

Why an aspect-ratio limit: CLIP-style image processors resize the *short* side to the encoder's input
size s and then centre-crop s x s. A 1,000,000 x 1 strip (3 kB of PNG) would be resized to
s*1,000,000 x s before the crop: gigabytes for one request. With the ratio capped at R the largest
array any stage builds is s x R*s, bounded by the model's input size, not by the upload's shape.

This module belongs to neither the server (`limits.py`: its limits, URLs, JSON bodies) nor the
pipeline: both, the chat, the web demo and the vLLM plugin import it.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from PIL import Image

from lyrics.refiner.images import load_image

MAX_ASPECT_RATIO = 20.0  # long side / short side of an image the pipeline accepts by default


class InputError(ValueError):
    """Bad input from a caller; `param` names the request field it came from (OpenAI's error `param`)."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code

def check_aspect_ratio(width: int, height: int, max_ratio: float, what: str = "image") -> None:
    """`InputError` (code `image_aspect_ratio`) when the long side exceeds `max_ratio` x the short one."""
    if width < 1 or height < 1:
        return  # the decoder names an image without pixels
    ratio = max(width, height) / min(width, height)
    if ratio > max_ratio:
        raise InputError(
            f"{what}: image is {width}x{height}, an aspect ratio of {ratio:.1f}:1, more than the limit of "
            f"{max_ratio:g}:1 (crop or pad it first)", code="image_aspect_ratio",
        )  # fmt: skip


def _peek_size(data: bytes, max_pixels: int, what: str) -> tuple[int, int] | None:
    """The image's size from its header alone (None when PIL cannot read one: the decoder says why).
    PIL refuses images beyond its own bomb limit while opening; the refusal is restated with this
    server's limit, which is the one a client can act on."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            return opened.size
    except Image.DecompressionBombError as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{pixels.group(1)} pixels" if pixels else "larger than PIL will open"
        raise InputError(f"{what}: image is {size}, more than the limit of {max_pixels}", code="image_too_large") from None
    except Exception:  # noqa: BLE001 - unreadable headers are reported by the decoder
        return None


def decode_image(data: bytes, max_pixels: int, what: str = "image", max_aspect_ratio: float | None = None) -> Image.Image:
    """Encoded image bytes -> RGB `PIL.Image` with EXIF orientation applied, or `InputError`.

    Decoding is `lyrics.refiner.images.load_image` (the project's one decoder; pixel count checked
    from the header before decoding); its reasons become 4xx messages naming the request field.

    Args:
        data: the encoded file (PNG, JPEG, ...).
        max_pixels: reject images with more pixels, checked from the header before decoding.
        what: how the error messages name this image (e.g. "messages[0].content[1]").
        max_aspect_ratio: reject images whose long side is more than this many times the short one,
            checked from the header before decoding (None: no limit).
    """
    size = _peek_size(data, max_pixels, what)
    if size is not None and max_aspect_ratio is not None:
        check_aspect_ratio(*size, max_aspect_ratio, what)
    loaded = load_image(data, max_pixels)
    if loaded.ok:
        return loaded.image
    reason = loaded.reason or "cannot decode"
    too_large = "max_image_pixels" in reason or "decompression bomb" in reason
    # The decoder's reasons are written for job logs; an API client gets them in its own terms.
    size = re.match(r"(\d+x\d+ = \d+ pixels) exceeds max_image_pixels=(\d+)", reason)
    if size:
        reason = f"image is {size.group(1)}, more than the limit of {size.group(2)}"
    elif reason.startswith("empty file"):
        reason = "empty image (0 bytes)"
    elif "not a recognised image format" in reason:
        reason = "not an image (the data is no known image format)"
    raise InputError(f"{what}: {reason}", code="image_too_large" if too_large else "invalid_image")


def open_image(source: Any, max_pixels: int, max_aspect_ratio: float = MAX_ASPECT_RATIO, what: str = "image") -> Image.Image | None:
    """A PIL image, a path or encoded bytes (or None) -> an RGB image within the limits, or `InputError`."""
    if source is None:
        return None
    if isinstance(source, Image.Image):
        if source.width * source.height > max_pixels:
            raise InputError(f"{what}: {source.width}x{source.height} pixels is more than the limit of {max_pixels}")
        check_aspect_ratio(source.width, source.height, max_aspect_ratio, what)
        return source.convert("RGB") if source.mode != "RGB" else source
    if isinstance(source, (bytes, bytearray)):
        return decode_image(bytes(source), max_pixels, what, max_aspect_ratio)
    if isinstance(source, (str, Path)):
        loaded = load_image(source, max_pixels)
        if not loaded.ok:
            raise InputError(f"{source}: {loaded.reason}")
        check_aspect_ratio(loaded.image.width, loaded.image.height, max_aspect_ratio, str(source))
        return loaded.image
    raise TypeError(f"{what}: expected a PIL image, a path or bytes, got {type(source).__name__}")
