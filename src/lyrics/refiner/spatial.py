"""The textual spatial representation of semantic-aware visual objects (paper section 3.1):

    <br><T>tag</T><Bbox>(x1,y1),(x2,y2)</Box></br>

one unit per object, concatenated. The same box syntax carries coordinates in instruction prompts and
answers (Table 10's `{Bbox}`), and model outputs are parsed back with it for REC and grounded chat.

Boxes inside the program are normalised `(x1, y1, x2, y2)` floats in [0, 1]. In text they are
written in one of two conventions:

* `"int1000"` (default, Qwen-VL style): integers in [0, 1000), `int(x * 1000)` clipped to 999;
* `"unit3"` (Shikra / released-code style): floats in [0, 1] with 3 decimals.

The released code's own box text, `tag: [x1, y1, x2, y2]` joined by `[SEP]`, is the `"released"`
style.

Parsing never raises: malformed text yields no box, never an exception, because it reads model output.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

Box = tuple[float, float, float, float]
COORDINATE_FORMATS = ("int1000", "unit3")
STYLES = ("paper", "released")

_NUMBER = r"\s*(-?\d+(?:\.\d+)?)\s*"
_PAIR_BOX = re.compile(r"\(" + _NUMBER + "," + _NUMBER + r"\)\s*,\s*\(" + _NUMBER + "," + _NUMBER + r"\)")
_LIST_BOX = re.compile(r"\[" + _NUMBER + "," + _NUMBER + "," + _NUMBER + "," + _NUMBER + r"\]")
_PAPER_OBJECT = re.compile(
    r"(?:<br>)?\s*<T>(?P<tag>.*?)</T>\s*<Bbox>(?P<box>.*?)</Box>\s*(?:</br>)?", re.DOTALL
)
_RELEASED_OBJECT = re.compile(r"(?P<tag>[^\[\]:]+?)\s*:\s*(?P<box>\[[^\]]*\])")
# Characters that would break the markup if they appeared in a tag.
_TAG_FORBIDDEN = re.compile(r"[<>\[\]():]")


def _check_format(fmt: str) -> None:
    if fmt not in COORDINATE_FORMATS:
        raise ValueError(f"coordinate format must be one of {COORDINATE_FORMATS}, got {fmt!r}")


def clamp01(value: float) -> float:
    return 0.0 if not math.isfinite(value) or value < 0 else 1.0 if value > 1 else float(value)


def format_coordinate(value: float, fmt: str = "int1000") -> str:
    """One normalised coordinate as text: `0.4567` -> `"456"` (int1000) or `"0.457"` (unit3)."""
    _check_format(fmt)
    value = clamp01(value)
    if fmt == "int1000":
        return str(min(999, int(value * 1000)))
    return f"{value:.3f}"


def parse_coordinate(text: str, fmt: str = "int1000") -> float | None:
    """Inverse of `format_coordinate`; `None` for anything that is not a number."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    if fmt == "int1000":
        return clamp01(value / 1000.0)
    return clamp01(value)


def quantize_box(box: Sequence[float], fmt: str = "int1000") -> Box:
    """The box a model can see after writing it as text and reading it back."""
    return tuple(parse_coordinate(format_coordinate(v, fmt), fmt) for v in box)  # type: ignore[return-value]


def format_box(box: Sequence[float], fmt: str = "int1000") -> str:
    """`(x1,y1),(x2,y2)` for a normalised xyxy box."""
    x1, y1, x2, y2 = (format_coordinate(v, fmt) for v in box)
    return f"({x1},{y1}),({x2},{y2})"


def clean_tag(tag: str) -> str:
    """Tags go inside markup: strip characters that would end it early, and collapse spaces."""
    return " ".join(_TAG_FORBIDDEN.sub(" ", str(tag)).split())


def format_object(tag: str, box: Sequence[float], fmt: str = "int1000", style: str = "paper") -> str:
    if style == "released":
        return f"{clean_tag(tag)}: [" + ", ".join(format_coordinate(v, "unit3" if fmt == "unit3" else fmt) for v in box) + "]"
    return f"<br><T>{clean_tag(tag)}</T><Bbox>{format_box(box, fmt)}</Box></br>"


def format_spatial(objects: Iterable[tuple[str, Sequence[float]]], fmt: str = "int1000", style: str = "paper") -> str:
    """The spatial representation of `(tag, normalised box)` pairs, in order."""
    if style not in STYLES:
        raise ValueError(f"spatial style must be one of {STYLES}, got {style!r}")
    units = [format_object(tag, box, fmt, style) for tag, box in objects]
    return " [SEP] ".join(units) if style == "released" else "".join(units)


def _box_from_numbers(numbers: Sequence[str], fmt: str) -> Box | None:
    values = [parse_coordinate(n, fmt) for n in numbers]
    if any(v is None for v in values):
        return None
    x1, y1, x2, y2 = values  # type: ignore[misc]
    # A model may write the corners in either order; the box is the same region.
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def parse_boxes(text: str, fmt: str = "int1000") -> list[Box]:
    """Every box written as `(x1,y1),(x2,y2)` or `[x1, y1, x2, y2]` in `text`, in order of appearance."""
    if not isinstance(text, str) or fmt not in COORDINATE_FORMATS:
        return []
    found: list[tuple[int, Box]] = []
    for pattern in (_PAIR_BOX, _LIST_BOX):
        for match in pattern.finditer(text):
            box = _box_from_numbers(match.groups(), fmt)
            if box is not None:
                found.append((match.start(), box))
    return [box for _, box in sorted(found, key=lambda item: item[0])]


def parse_first_box(text: str, fmt: str = "int1000") -> Box | None:
    boxes = parse_boxes(text, fmt)
    return boxes[0] if boxes else None


def parse_spatial(text: str, fmt: str = "int1000", style: str = "paper") -> list[tuple[str, Box]]:
    """`(tag, box)` pairs from a spatial representation; objects that do not parse are skipped."""
    if not isinstance(text, str) or fmt not in COORDINATE_FORMATS:
        return []
    pattern = _RELEASED_OBJECT if style == "released" else _PAPER_OBJECT
    objects = []
    for match in pattern.finditer(text):
        boxes = parse_boxes(match.group("box"), fmt)
        tag = clean_tag(match.group("tag").replace("[SEP]", " "))
        if boxes and tag:
            objects.append((tag, boxes[0]))
    return objects


def box_to_pixels(box: Sequence[float], width: int, height: int) -> Box:
    x1, y1, x2, y2 = box
    return (x1 * width, y1 * height, x2 * width, y2 * height)


def box_from_pixels(box: Sequence[float], width: int, height: int) -> Box:
    x1, y1, x2, y2 = box
    return (clamp01(x1 / width), clamp01(y1 / height), clamp01(x2 / width), clamp01(y2 / height))


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two xyxy boxes (any units); 0 for empty boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def region_markup(box: Sequence[float], fmt: str = "int1000", tag: str | None = None, style: str = "paper") -> str:
    """A normalised xyxy box in the prompt markup the model was trained with (Table 10's
    "{Tag & Bbox}"): `<T>tag</T><Bbox>(x1,y1),(x2,y2)</Box>`, or `<Bbox>...</Box>` without a tag."""
    if style == "released":
        return format_object(tag or "region", box, fmt, style)
    markup = f"<Bbox>{format_box(box, fmt)}</Box>"
    return f"<T>{clean_tag(tag)}</T>{markup}" if tag else markup


def tagged_boxes(text: str, fmt: str = "int1000", style: str = "paper") -> list[tuple[str | None, Box]]:
    """Every box of a generated text, in order, with the tag written before it (None if untagged)."""
    tagged = list(parse_spatial(text, fmt, style))
    out: list[tuple[str | None, Box]] = []
    for box in parse_boxes(text, fmt):
        tag = None
        for i, (name, candidate) in enumerate(tagged):
            if candidate == box:
                tag = name
                del tagged[i]
                break
        out.append((tag, box))
    return out
