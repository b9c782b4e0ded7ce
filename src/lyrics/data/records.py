"""The instruction record: one training sample of stage 2, LLaVA-style JSON plus boxes.

A record file is a JSON list (or JSON lines) of::

    {"id": str,
     "image": str | null,                       # path relative to the dataset's image root
     "task": str,                               # captioning, vqa, text_vqa, grounded_captioning, rec,
                                                # referential_dialogue, multiple_choice_vqa, text, instruction
     "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}, ...],
     "boxes": [[x1, y1, x2, y2], ...],          # optional; normalised xyxy in [0, 1]
     "refiner": str,                            # optional; image_id in a refiner feature store
     "source": str,                             # dataset the record came from
     "meta": {...}}                             # free-form (template index, question id, answers ...)

Box placeholders. Text refers to boxes as `<box:i>` (an index into "boxes") instead of literal
coordinates, so geometric augmentation can move a box and every mention of it together.
`render_conversation(record, fmt)` writes each placeholder in the paper's markup, the same as the
spatial representation (lyrics.refiner.spatial)::

    <box:0>            -> <Bbox>(x1,y1),(x2,y2)</Box>             (coordinates by `format_box`)
    <T>dog</T><box:0>  -> <T>dog</T><Bbox>(x1,y1),(x2,y2)</Box>   (Table 10's "{Tag & Bbox}")

with coordinates as "int1000" (integers in [0, 1000), default) or "unit3" (3 decimals in [0, 1]).

Plain LLaVA JSON (no task, no boxes, literal coordinates in text) loads too: a missing task becomes
"instruction" (with an image) or "text" (without). Literal coordinates cannot follow a crop or flip,
so `has_literal_boxes` lets augmentation leave such records' geometry alone, and
`lift_literal_boxes` turns paper-markup coordinates into placeholders when their format is known.

Validation names the file, the record index (and id) and the field of a bad record
(`RecordError`, a `FormatError`); `load_records(..., skip_invalid=True)` skips and records bad
records instead, for training.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lyrics.atomic import atomic_write_json, atomic_write_text
from lyrics.data.official.common import FormatError
from lyrics.refiner.spatial import Box, format_box, parse_boxes, parse_coordinate

IMAGE_TOKEN = "<image>"
ROLES = ("human", "gpt")
PLACEHOLDER = re.compile(r"<box:(\d+)>")
_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
_MARKUP_BOX = re.compile(r"<Bbox>\s*\(" + _NUM + "," + _NUM + r"\)\s*,\s*\(" + _NUM + "," + _NUM + r"\)\s*</Box>")
_KNOWN_KEYS = {"id", "image", "task", "conversations", "boxes", "refiner", "source", "meta"}


class RecordError(FormatError):
    """A record that does not follow the format; names the file, record and field."""


def placeholder(index: int) -> str:
    return f"<box:{index}>"


@dataclass
class InstructionRecord:
    """One instruction sample; see the module docstring for the JSON form and the placeholders."""

    id: str
    image: str | None
    task: str
    conversations: list[dict[str, str]]
    boxes: list[Box] = field(default_factory=list)
    refiner: str | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "image": self.image, "task": self.task, "conversations": self.conversations}
        if self.boxes:
            out["boxes"] = [list(b) for b in self.boxes]
        if self.refiner is not None:
            out["refiner"] = self.refiner
        out["source"] = self.source
        out["meta"] = self.meta
        return out

    @classmethod
    def from_dict(cls, data: Any, file: Any = None, index: int | None = None) -> "InstructionRecord":
        """Validate `data` and build a record; raises `RecordError` naming file, index and field."""
        return validate_record(data, file, index)

    def referenced_boxes(self) -> list[int]:
        """Sorted indices of the boxes the conversation mentions through placeholders."""
        return sorted({int(m.group(1)) for turn in self.conversations for m in PLACEHOLDER.finditer(turn["value"])})


def _where(index: int | None, data: Any) -> str | None:
    if index is None:
        return None
    rid = data.get("id") if isinstance(data, dict) else None
    return f"record {index}" + (f" (id={rid!r})" if rid is not None else "")


def _check_box(box: Any, file: Any, where: str | None, name: str) -> Box:
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise RecordError(file, f"expected [x1, y1, x2, y2], got {box!r}", where, name)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box):
        raise RecordError(file, f"coordinates must be finite numbers, got {box!r}", where, name)
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (0.0 <= x1 <= x2 <= 1.0 and 0.0 <= y1 <= y2 <= 1.0):
        raise RecordError(file, f"must be normalised xyxy with 0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1, got {box!r}", where, name)
    return (x1, y1, x2, y2)


def validate_record(data: Any, file: Any = None, index: int | None = None) -> InstructionRecord:
    """Check one JSON record and return it as an `InstructionRecord` (see module docstring)."""
    where = _where(index, data)
    if not isinstance(data, dict):
        raise RecordError(file, f"expected an object, got {type(data).__name__}", where)
    rid = data.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    if not isinstance(rid, str) or not rid:
        raise RecordError(file, "must be a non-empty string", where, "id")
    image = data.get("image")
    if image is not None and (not isinstance(image, str) or not image):
        raise RecordError(file, "must be a non-empty string or null", where, "image")
    task = data.get("task") or ("instruction" if image is not None else "text")
    if not isinstance(task, str):
        raise RecordError(file, "must be a string", where, "task")
    turns = data.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise RecordError(file, "must be a non-empty list of turns", where, "conversations")
    conversations = []
    for t, turn in enumerate(turns):
        name = f"conversations[{t}]"
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise RecordError(file, "must be {'from': 'human'|'gpt', 'value': str}", where, name)
        expected = ROLES[t % 2]
        if turn.get("from") != expected:
            raise RecordError(file, f"'from' must be {expected!r} (turns alternate, human first), got {turn.get('from')!r}", where, name)
        conversations.append({"from": expected, "value": turn["value"]})
    if conversations[-1]["from"] != "gpt":
        raise RecordError(file, "the last turn must be from 'gpt'", where, "conversations")
    n_image_tokens = sum(turn["value"].count(IMAGE_TOKEN) for turn in conversations)
    if image is None and n_image_tokens:
        raise RecordError(file, f"has {IMAGE_TOKEN} but the record has no image", where, "conversations")
    if n_image_tokens > 1:
        raise RecordError(file, f"{IMAGE_TOKEN} appears {n_image_tokens} times (one image per record)", where, "conversations")
    raw_boxes = data.get("boxes") or []
    if not isinstance(raw_boxes, list):
        raise RecordError(file, "must be a list of boxes", where, "boxes")
    boxes = [_check_box(b, file, where, f"boxes[{i}]") for i, b in enumerate(raw_boxes)]
    for t, turn in enumerate(conversations):
        for m in PLACEHOLDER.finditer(turn["value"]):
            if int(m.group(1)) >= len(boxes):
                raise RecordError(file, f"{m.group(0)} refers past the {len(boxes)} boxes", where, f"conversations[{t}]")
    refiner = data.get("refiner")
    if refiner is not None and not isinstance(refiner, str):
        raise RecordError(file, "must be a string (a refiner store image_id) or null", where, "refiner")
    source = data.get("source", "")
    if not isinstance(source, str):
        raise RecordError(file, "must be a string", where, "source")
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        raise RecordError(file, "must be an object", where, "meta")
    extra = {k: v for k, v in data.items() if k not in _KNOWN_KEYS}
    if extra:
        meta = {**meta, "extra_fields": extra}
    return InstructionRecord(rid, image, task, conversations, boxes, refiner, source, dict(meta))


@dataclass
class SkippedRecord:
    index: int
    id: str | None
    error: str


@dataclass
class RecordFile:
    """Records loaded from one file, plus the bad records that were skipped (index, id, error)."""

    path: Path
    records: list[InstructionRecord]
    skipped: list[SkippedRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, i: int) -> InstructionRecord:
        return self.records[i]


def _raw_records(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    rows.append(RecordError(path, f"not valid JSON ({exc.msg})", f"line {number}"))
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(path, f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, list):
        raise RecordError(path, f"expected a JSON list of records, got {type(data).__name__}")
    return data


def load_records(path: str | os.PathLike, skip_invalid: bool = False) -> RecordFile:
    """Load a record file (`.json` list or `.jsonl`).

    `skip_invalid=False` raises the first `RecordError`; `True` (training) keeps going and lists
    every bad record in `RecordFile.skipped`. Duplicate ids are errors either way (they would make
    skip lists and evaluation joins ambiguous).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: record file not found")
    records, skipped, seen = [], [], set()
    for i, raw in enumerate(_raw_records(path)):
        try:
            if isinstance(raw, RecordError):
                raise raw
            record = validate_record(raw, path, i)
            if record.id in seen:
                raise RecordError(path, f"duplicate id {record.id!r}", _where(i, raw), "id")
            seen.add(record.id)
            records.append(record)
        except RecordError as exc:
            if not skip_invalid:
                raise
            rid = raw.get("id") if isinstance(raw, dict) else None
            skipped.append(SkippedRecord(i, None if rid is None else str(rid), str(exc)))
    return RecordFile(path, records, skipped)


def save_records(records: Iterable[InstructionRecord], path: str | os.PathLike) -> Path:
    """Write records atomically (temp file + os.replace): JSON list, or JSON lines for `.jsonl`."""
    path = Path(path)
    rows = [r.to_dict() for r in records]
    if path.suffix == ".jsonl":
        return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return atomic_write_json(path, rows)


def render_text(text: str, boxes: Sequence[Sequence[float]], coordinate_format: str = "int1000") -> str:
    """Replace every `<box:i>` in `text` by `<Bbox>(x1,y1),(x2,y2)</Box>` for `boxes[i]`."""

    def box_text(match: re.Match) -> str:
        i = int(match.group(1))
        if i >= len(boxes):
            raise IndexError(f"{match.group(0)} refers past the {len(boxes)} boxes")
        return f"<Bbox>{format_box(boxes[i], coordinate_format)}</Box>"

    return PLACEHOLDER.sub(box_text, text)


def render_conversation(
    record: InstructionRecord | dict[str, Any], coordinate_format: str = "int1000"
) -> list[dict[str, str]]:
    """The record's turns with box placeholders written in the paper's markup (see module docstring)."""
    if isinstance(record, dict):
        turns, boxes = record["conversations"], record.get("boxes") or []
    else:
        turns, boxes = record.conversations, record.boxes
    return [{"from": t["from"], "value": render_text(t["value"], boxes, coordinate_format)} for t in turns]


def has_literal_boxes(conversations: Sequence[dict[str, str]]) -> bool:
    """True when the text writes coordinates literally (not as placeholders)."""
    return any(parse_boxes(PLACEHOLDER.sub(" ", turn["value"])) for turn in conversations)


def lift_literal_boxes(record: InstructionRecord, coordinate_format: str) -> InstructionRecord:
    """Turn `<Bbox>(x1,y1),(x2,y2)</Box>` text written in `coordinate_format` into placeholders.

    New boxes are appended to `record.boxes`; bare coordinates outside the markup are left alone.
    """
    boxes = list(record.boxes)

    def lift(match: re.Match) -> str:
        values = [parse_coordinate(v, coordinate_format) for v in match.groups()]
        x1, y1, x2, y2 = values  # parse_coordinate only fails on non-numbers, which the regex excludes
        boxes.append((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
        return placeholder(len(boxes) - 1)

    turns = [{"from": t["from"], "value": _MARKUP_BOX.sub(lift, t["value"])} for t in record.conversations]
    return InstructionRecord(record.id, record.image, record.task, turns, boxes, record.refiner, record.source, dict(record.meta))
