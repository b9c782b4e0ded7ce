"""Pictures of what the refiner found: masks, boxes and tags drawn over the image (`--visualize DIR`).

Looking at a few hundred of these is the fastest way to tune thresholds and catch a wrong coordinate
convention. Colours are fixed per tag (hash of the tag), so one tag keeps its colour across images.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lyrics.refiner import rle
from lyrics.refiner.record import RefinerRecord
from lyrics.atomic import atomic_write_bytes

MASK_ALPHA = 0.45


def tag_colour(tag: str) -> tuple[int, int, int]:
    """A stable, saturated colour per tag."""
    digest = hashlib.md5(tag.encode("utf-8")).digest()
    channels = [64 + digest[i] % 192 for i in range(3)]
    channels[digest[3] % 3] = 255  # one full channel keeps it vivid on photos
    return tuple(channels)  # type: ignore[return-value]


def draw_record(image: Image.Image, record: RefinerRecord) -> Image.Image:
    """A copy of `image` with each object's mask (translucent), box and "tag score" label."""
    canvas = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    for obj in record.objects:
        if obj.mask_rle is None:
            continue
        mask = rle.decode(obj.mask_rle)
        if mask.shape != canvas.shape[:2]:
            continue  # a record of another image size: skip the mask rather than misplace it
        colour = np.asarray(tag_colour(obj.tag), dtype=np.float32)
        canvas[mask] = (1 - MASK_ALPHA) * canvas[mask] + MASK_ALPHA * colour
    out = Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    width = max(1, round(min(out.size) / 200))
    for obj in record.objects:
        colour = tag_colour(obj.tag)
        x1, y1, x2, y2 = obj.box
        draw.rectangle((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), outline=colour, width=width)
        label = f"{obj.tag} {obj.score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), label)
        y = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1
        draw.rectangle((x1, y, x1 + (right - left) + 2, y + (bottom - top) + 2), fill=colour)
        draw.text((x1 + 1, y), label, fill=(0, 0, 0))
    return out


def visualization_path(directory: str | Path, image_id: str) -> Path:
    """`a/b/c.jpg` -> `DIR/a__b__c.jpg.png` (flat, no path escapes)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id.replace("/", "__")).lstrip(".") or "image"
    return Path(directory) / f"{safe}.png"


def save_visualization(image: Image.Image, record: RefinerRecord, directory: str | Path) -> Path:
    """Draw `record` on `image` and write the PNG atomically; returns its path."""
    path = visualization_path(directory, record.image_id)
    buffer = io.BytesIO()
    draw_record(image, record).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return path
