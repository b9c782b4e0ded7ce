"""Robust image loading for the refiner's batch job.

At paper scale (hundreds of millions of web images) every kind of broken file shows up: zero-byte
downloads, truncated JPEGs, HTML error pages saved as `.jpg`, decompression bombs, CMYK scans,
16-bit PNGs, palette GIFs with transparency, phone photos whose orientation lives in EXIF. None of them
may stop the job. `load_image` turns a path into an RGB `PIL.Image` the models can take, or into a
short reason string that goes to the store's errors file.

The pixel-count limit is checked from the header, before any pixel is decoded, so a bomb costs a
few bytes of reading. PIL's own guard (`Image.MAX_IMAGE_PIXELS`) is global mutable state; we leave it
alone and report its error as a reason too.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
# Composite transparent pixels over white: web images with alpha are mostly logos and cut-outs drawn
# for light pages, and white is what a browser shows.
_BACKGROUND = (255, 255, 255)


@dataclass
class LoadedImage:
    """The outcome of loading one file: `image` (RGB) or `reason` (why it was rejected).

    `notes` says what normalisation was applied (e.g. "mode CMYK -> RGB", "EXIF rotation"), kept in
    the record's metadata so a surprising box can be traced back to a conversion.
    """

    image: Image.Image | None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.image is not None


def _to_8bit(array: np.ndarray) -> np.ndarray:
    """Integer or float single-channel data -> uint8. 16-bit data uses the full 0..65535 range
    (PNG, TIFF); floats are taken as [0, 1] when they fit, else clipped to [0, 255]."""
    if array.dtype.kind == "f":
        finite = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        return np.clip(finite * scale, 0, 255).astype(np.uint8)
    if array.size and array.max() > 255:
        return np.clip(array.astype(np.int64) // 257, 0, 255).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """Normalise any PIL mode to 8-bit RGB. Returns the image and a note per conversion."""
    mode = image.mode
    if mode == "RGB":
        return image, []
    notes = [f"mode {mode} -> RGB"]
    if mode == "P":
        # Palette images may carry transparency in `info`; expand it to alpha first.
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
        if mode == "RGB":
            return image, notes
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        gray = Image.fromarray(_to_8bit(np.asarray(image)), mode="L")
        return gray.convert("RGB"), notes
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB"), notes
    # "1", "L", "CMYK", "YCbCr", "LAB", "HSV", "RGBX": PIL's converters are exact enough.
    return image.convert("RGB"), notes


def load_image(source: str | Path | bytes, max_pixels: int) -> LoadedImage:
    """Open an image file (or its encoded bytes) as RGB with EXIF orientation applied, or say why not.

    The one image decoder of the project: the refiner job, the training datasets and the server's
    uploads all go through it, so every part sees the same pixels for the same file.

    Args:
        source: image file path, or the encoded bytes (uploads, webdataset samples).
        max_pixels: reject images with more than this many pixels (checked before decoding).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            return LoadedImage(None, "empty file (0 bytes)")

        def opener():
            return Image.open(io.BytesIO(data))
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            return LoadedImage(None, f"cannot read file: {exc.strerror or exc}")
        if size == 0:
            return LoadedImage(None, "empty file (0 bytes)")

        def opener():
            return Image.open(path)

    try:
        # (No `warnings.catch_warnings` around this: it is not thread-safe and the job decodes in
        # threads. PIL's DecompressionBombWarning fires only above its own limit, 89M pixels.)
        with opener() as opened:
            width, height = opened.size
            if width < 1 or height < 1:
                return LoadedImage(None, f"image has no pixels ({width}x{height})")
            if width * height > max_pixels:
                return LoadedImage(None, f"{width}x{height} = {width * height} pixels exceeds max_image_pixels={max_pixels}")
            if getattr(opened, "n_frames", 1) > 1:
                opened.seek(0)  # animated GIF / multi-page TIFF: the first frame stands for the file
            opened.load()
            image = opened.copy()
    except Image.DecompressionBombError as exc:
        return LoadedImage(None, f"decompression bomb: {exc}")
    except UnidentifiedImageError:
        return LoadedImage(None, "not a recognised image format (corrupt file or not an image)")
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return LoadedImage(None, f"corrupt or truncated image: {exc}")

    notes: list[str] = []
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # malformed EXIF must not reject an otherwise good image
        orientation = 1
    if orientation not in (1, None):
        try:
            image = ImageOps.exif_transpose(image)
            notes.append(f"EXIF orientation {orientation} applied")
        except Exception as exc:  # noqa: BLE001 - keep the unrotated pixels, say so
            notes.append(f"EXIF orientation {orientation} ignored ({exc})")
    try:
        image, mode_notes = to_rgb(image)
    except (OSError, ValueError) as exc:
        return LoadedImage(None, f"cannot convert mode {image.mode} to RGB: {exc}")
    return LoadedImage(image, None, notes + mode_notes)
