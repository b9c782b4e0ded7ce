"""Typed samples returned by the official-format readers (one dataclass per kind of annotation).

Image paths are already resolved against the image root the caller gave the reader; they are not
checked for existence here (datasets skip and record missing images; evaluation reports them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PixelBox = tuple[float, float, float, float]


@dataclass
class CaptionSample:
    """One image with its reference captions (COCO captions, NoCaps, Karpathy splits)."""

    image_id: int | str
    image_path: Path
    captions: list[str]
    width: int | None = None
    height: int | None = None
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class QASample:
    """One question about one image (or no image: ScienceQA text-only problems have `image_path=None`).

    Args:
        answers: every reference answer the official scorer uses (10 human answers for VQAv2 / OK-VQA /
            TextVQA / VizWiz / A-OKVQA direct answers; one for GQA, OCR-VQA, ScienceQA); empty for
            test splits without answers.
        choices: the options of a multiple-choice question, else None.
        answer_index: index of the correct option in `choices`, else None.
        meta: format-specific extras (answer_type, multiple_choice_answer, fullAnswer, hint, split ...).
    """

    question_id: int | str
    image_id: int | str | None
    image_path: Path | None
    question: str
    answers: list[str]
    choices: list[str] | None = None
    answer_index: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RefSample:
    """One referred object (RefCOCO / RefCOCO+ / RefCOCOg) with all its expressions.

    Args:
        box_xyxy: the object's box in pixels, (x1, y1, x2, y2) from the COCO (x, y, w, h) bbox.
        width, height: size of the image the box refers to (from `instances.json`).
    """

    ref_id: int
    ann_id: int
    image_id: int
    image_path: Path
    sentences: list[str]
    box_xyxy: PixelBox
    width: int
    height: int
    split: str
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def box_norm(self) -> PixelBox:
        from lyrics.refiner.spatial import box_from_pixels

        return box_from_pixels(self.box_xyxy, self.width, self.height)


@dataclass
class PopeSample:
    """One POPE yes/no object-existence question; `label` is "yes" or "no"."""

    question_id: int
    image_path: Path
    question: str
    label: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class MMESample:
    """One MME yes/no question; `answer` is "Yes" or "No", `category` is "perception" or "cognition"."""

    subtask: str
    category: str
    image_name: str
    image_path: Path
    question: str
    answer: str


@dataclass
class LLaVABenchSample:
    """One LLaVA-Bench question with what its judge sees: the image's caption(s) from the context
    file, the GPT-4 reference answer, and the rule (role name and instruction) of its category."""

    question_id: int | str
    image_path: Path
    question: str
    category: str
    caption: str | list[str]
    reference: str
    reference_id: str
    role: str
    rule: str


@dataclass
class TextSample:
    """One pure-text instruction (Alpaca)."""

    index: int
    instruction: str
    input: str
    output: str


@dataclass
class BoxedText:
    """Text whose k-th `<boxes>` placeholder stands for the boxes `boxes_seq[k]` (indices into the
    sample's boxes); `phrases[k]` is the noun phrase the placeholder belongs to when the source marked
    it (Shikra's `<ph_st>phrase<ph_ed>` releases), else None."""

    text: str
    boxes_seq: list[list[int]]
    phrases: list[str | None]


@dataclass
class DialogueSample:
    """One Shikra GPT4Gen-RD referential-dialogue sample; `boxes` are pixel xyxy of the image.

    `cot` is the box chain-of-thought answer (`cot_with_ans`) when the file has one.
    """

    index: int
    image_path: Path
    boxes: list[PixelBox]
    question: BoxedText
    answer: BoxedText
    cot: BoxedText | None = None
