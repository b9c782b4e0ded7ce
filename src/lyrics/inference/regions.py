"""Regions in questions (referential dialogue): how every surface takes a user's box.

A question refers to a region with the placeholder `<region>`; each placeholder takes the next box,
in order, rendered in the paper's markup `<T>tag</T><Bbox>(x1,y1),(x2,y2)</Box>` in the checkpoint's
coordinate convention (`refiner_config.coordinate_format`), as the training data put it. The same rules
hold for `LyricsPipeline(..., regions=...)`, `lyrics chat --region`, `lyrics serve`'s `regions`
field, the web demo's drawn boxes and the vLLM plugin:

- a box is x1,y1,x2,y2 in `region_format`: "pixels" of the original image (the default), "0-1"
  (normalised) or "0-1000" (normalised to 1000, Qwen-VL's convention);
- it must lie inside the image (0 <= x1 < x2 <= width, 0 <= y1 < y2 <= height, in pixels), with
  positive area: anything else is an `InputError` naming the box, never a silent clamp;
- the question must hold exactly as many placeholders as boxes; `with_regions` gives a question
  that has none one placeholder per box, before its closing "?" ("What is the object <region>?", the
  shape of the referential-dialogue template), since a person asking about a drawn box does not type one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lyrics.inference.inputs import InputError
from lyrics.refiner.spatial import box_from_pixels, region_markup

REGION = "<region>"
REGION_FORMATS = {"pixels": None, "0-1": 1.0, "0-1000": 1000.0}  # format -> the scale of a normalised box


def parse_region(text: str) -> tuple[float, float, float, float]:
    """`"10,20,110,220"` (or space separated) -> four numbers (checked against an image later)."""
    parts = text.replace(",", " ").split()
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise InputError(f"region {text!r}: expected four numbers x1,y1,x2,y2", param="regions") from None
    if len(values) != 4:
        raise InputError(f"region {text!r}: expected four numbers x1,y1,x2,y2, got {len(values)}", param="regions")
    return values  # type: ignore[return-value]


def to_pixels(box: Any, width: int, height: int, region_format: str = "pixels") -> tuple[float, float, float, float]:
    """A box in `region_format` -> pixel xyxy, checked: four finite numbers, positive area, inside the
    `width` x `height` image."""
    if region_format not in REGION_FORMATS:
        raise InputError(f"region_format must be one of {sorted(REGION_FORMATS)}, got {region_format!r}", param="region_format")
    try:
        values = [float(v) for v in box] if isinstance(box, Sequence) and not isinstance(box, str) else []
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InputError(f"a region must be 4 finite coordinates x1,y1,x2,y2, got {box!r}", param="regions")
    scale = REGION_FORMATS[region_format]
    if scale is not None:
        values = [v / scale * (width if i % 2 == 0 else height) for i, v in enumerate(values)]
    x1, y1, x2, y2 = values
    where = f"region {list(box)!r}" + ("" if scale is None else f" ({region_format})")
    if x2 <= x1 or y2 <= y1:
        raise InputError(f"{where} has no area: need x1 < x2 and y1 < y2", param="regions")
    eps = 1e-6 * max(width, height)  # a box drawn exactly to the edge, after float scaling
    if x1 < -eps or y1 < -eps or x2 > width + eps or y2 > height + eps:
        raise InputError(f"{where} is not inside the {width}x{height} image", param="regions")
    return (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))


def region_text(box: Any, width: int, height: int, fmt: str = "int1000", tag: str | None = None, style: str = "paper",
                region_format: str = "pixels") -> str:  # fmt: skip
    """A user's box (checked by `to_pixels`) in the prompt markup (`lyrics.refiner.spatial.region_markup`)."""
    return region_markup(box_from_pixels(to_pixels(box, width, height, region_format), width, height), fmt, tag, style)


def split_region(region: Any) -> tuple[str | None, Any]:
    """A region is a box or a `(tag, box)` pair -> (tag or None, box)."""
    if isinstance(region, Sequence) and len(region) == 2 and isinstance(region[0], str):
        return region[0], region[1]
    return None, region


def expand_regions(prompt: str, regions: Sequence[Any] | None, width: int, height: int, fmt: str = "int1000", style: str = "paper",
                   region_format: str = "pixels") -> str:  # fmt: skip
    """Replace each `<region>` in `prompt` by the next region (a box, or a `(tag, box)` pair)."""
    regions = list(regions or [])
    count = prompt.count(REGION)
    if count != len(regions):
        raise InputError(f"the question has {count} {REGION} placeholder(s) but {len(regions)} region(s) were given", param="regions")
    for region in regions:
        tag, box = split_region(region)
        prompt = prompt.replace(REGION, region_text(box, width, height, fmt, tag, style, region_format), 1)
    return prompt


def with_regions(prompt: str, regions: Sequence[Any] | int) -> str:
    """A question about some boxes (a list, or their count) that names none of them gets one
    placeholder per box, before its closing "?" if it has one. A question that already holds
    placeholders is left to `expand_regions`, which refuses a count that does not match."""
    count = regions if isinstance(regions, int) else len(regions)
    if count <= 0 or REGION in prompt:
        return prompt
    marks = " ".join([REGION] * count)
    stripped = prompt.rstrip()
    if stripped.endswith("?"):
        return f"{stripped[:-1].rstrip()} {marks}?"
    return f"{stripped} {marks}"
