"""What every converter shares: options, the result type, and small record builders."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lyrics.data.records import InstructionRecord
from lyrics.data.templates import TemplateBank, default_bank


@dataclass
class ConvertOptions:
    """Options shared by all converters.

    Args:
        images: image root the official layout's paths are resolved against; records store image
            paths relative to it (so `InstructionDataset(records, image_root=images)` finds them).
        split: keep only this split, for formats that have one.
        seed: seed of the per-sample template choice (and of REC negatives).
        template: use template `template` of each task instead of choosing per sample.
        bank: the templates (default: the paper's Table 10).
    """

    images: Path | None = None
    split: str | None = None
    seed: int = 0
    template: int | None = None
    bank: TemplateBank = field(default_factory=default_bank)


@dataclass
class Conversion:
    """Converter output: the records, and a line per source sample that could not be converted."""

    records: list[InstructionRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def extend(self, other: "Conversion") -> "Conversion":
        self.records.extend(other.records)
        self.skipped.extend(other.skipped)
        return self


def relative_image(path: str | os.PathLike | None, images: Path | None) -> str | None:
    """The record's `image`: `path` relative to the image root, with forward slashes."""
    if path is None:
        return None
    if images is None:
        return Path(path).as_posix()
    return Path(os.path.relpath(path, images)).as_posix()


def most_common(answers: Sequence[str]) -> str | None:
    """The most frequent answer; ties go to the one that appears first (Counter keeps insertion order)."""
    if not answers:
        return None
    return Counter(a.strip() for a in answers).most_common(1)[0][0]


def single_turn(
    rid: str,
    image: str | None,
    task: str,
    prompt: str,
    answer: str,
    source: str,
    meta: dict,
    boxes: list | None = None,
) -> InstructionRecord:
    conversations = [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]
    return InstructionRecord(rid, image, task, conversations, list(boxes or []), None, source, meta)


def format_options(choices: Sequence[str]) -> str:
    """The paper's option list: `(a) blue (b) yellow (c) pink (d) black`."""
    if len(choices) > 26:
        raise ValueError(f"at most 26 options can be lettered, got {len(choices)}")
    return " ".join(f"({chr(ord('a') + i)}) {choice}" for i, choice in enumerate(choices))
