"""Pictures of an answer: the refiner's objects (masks, boxes, tags; `refiner.visualize.draw_record`)
with the boxes the model wrote in its answer drawn on top, thicker and numbered, so a reader sees at
once what the refiner found and what the answer points at."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw

from lyrics.inference.pipeline import PipelineResult
from lyrics.atomic import atomic_write_bytes
from lyrics.refiner.visualize import draw_record

ANSWER_COLOUR = (255, 0, 255)


def draw_result(image: Image.Image, result: PipelineResult, refiner_objects: bool = True) -> Image.Image:
    """A copy of `image` with the refiner's objects (optional) and the answer's boxes drawn."""
    out = draw_record(image, result.record) if refiner_objects and result.record is not None else image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(min(out.size) / 100))
    for i, box in enumerate(result.boxes, 1):
        x1, y1, x2, y2 = box.box
        draw.rectangle((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), outline=ANSWER_COLOUR, width=width)
        label = f"#{i} {box.tag}" if box.tag else f"#{i}"
        left, top, right, bottom = draw.textbbox((x1, y2), label)
        y = min(y2 + 1, out.height - (bottom - top) - 2)
        draw.rectangle((x1, y, x1 + (right - left) + 2, y + (bottom - top) + 2), fill=ANSWER_COLOUR)
        draw.text((x1 + 1, y), label, fill=(255, 255, 255))
    return out


def save_picture(picture: Image.Image, path: str | Path) -> Path:
    """Write a PNG atomically (a crash never leaves half a file)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)
