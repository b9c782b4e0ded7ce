"""Trivial baselines: what a model scores without looking at the image, printed beside every result
so a number can be read at a glance (the issue's quality floor: the model must clearly beat them).

* VQA: the most common training answer for the question's type (`MajorityAnswer`), which captures
  language priors such as "what colour" -> "red" or "is there" -> "yes".
* POPE and other yes/no sets: always "yes" (`always_yes`); its POPE recall is 1 and its precision the
  share of yes-labels.
* REC: one fixed box for every expression, the centre box (0.25, 0.25, 0.75, 0.75) or the mean
  training box (`CENTRE_BOX`, `mean_box`, `box_predictions`).
* Captioning: the most common training caption for every image (`constant_caption_predictions`).

Every baseline returns predictions in the form the matching metric in `lyrics.eval.metrics` takes,
text included (boxes are written with the spatial-representation syntax and parsed back by the REC
scorer), so baselines and models go through exactly the same scoring path.

Ties are broken by the smallest string, so a baseline never depends on the order of the data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lyrics.refiner.spatial import COORDINATE_FORMATS, Box, format_box

CENTRE_BOX: Box = (0.25, 0.25, 0.75, 0.75)


def _most_common(counts: Counter[str]) -> str:
    """The highest count, ties broken by the smallest string."""
    return min(counts.items(), key=lambda item: (-item[1], item[0]))[0]


# ---------------------------------------------------------------------------------------------
# VQA: majority answer per question type
# ---------------------------------------------------------------------------------------------


@dataclass
class MajorityAnswer:
    """The most common training answer per question type, with the overall most common answer for
    types never seen in training.

    Attributes:
        by_type: question type -> its majority answer.
        fallback: the majority answer over all training questions.
    """

    by_type: dict[str, str] = field(default_factory=dict)
    fallback: str = ""

    @classmethod
    def fit(cls, pairs: Iterable[tuple[str | None, str]]) -> MajorityAnswer:
        """Learn from `(question_type, answer)` training pairs (`None` type counts only overall)."""
        per_type: dict[str, Counter[str]] = {}
        overall: Counter[str] = Counter()
        for qtype, answer in pairs:
            if not isinstance(answer, str):
                raise ValueError(f"training answers must be strings, got {answer!r}")
            overall[answer] += 1
            if qtype is not None:
                per_type.setdefault(str(qtype), Counter())[answer] += 1
        if not overall:
            raise ValueError("MajorityAnswer.fit needs at least one training pair")
        return cls(by_type={t: _most_common(c) for t, c in per_type.items()}, fallback=_most_common(overall))

    def predict(self, question_type: str | None) -> str:
        return self.by_type.get(str(question_type), self.fallback) if question_type is not None else self.fallback

    def predictions(self, annotations: Sequence[Mapping[str, Any]]) -> dict[Any, str]:
        """question_id -> answer for VQA annotation (or question) dicts with `question_type`; feed
        the result to `score_vqa` with the same annotations."""
        return {ann["question_id"]: self.predict(ann.get("question_type")) for ann in annotations}


def vqa_training_pairs(annotations: Iterable[Mapping[str, Any]]) -> list[tuple[str | None, str]]:
    """`(question_type, answer)` from official VQA annotation dicts: the `multiple_choice_answer`
    (the annotators' most frequent answer), or else the most common of the human `answers`."""
    pairs = []
    for index, ann in enumerate(annotations):
        answer = ann.get("multiple_choice_answer")
        if answer is None:
            answers = [a["answer"] if isinstance(a, Mapping) else a for a in ann.get("answers", ())]
            if not answers:
                raise ValueError(f"annotation #{index} has neither 'multiple_choice_answer' nor 'answers'")
            answer = _most_common(Counter(answers))
        pairs.append((ann.get("question_type"), answer))
    return pairs


# ---------------------------------------------------------------------------------------------
# Yes/no
# ---------------------------------------------------------------------------------------------


def always_yes(count: int) -> list[str]:
    """`count` answers "yes", aligned with a POPE question file (feed to `score_pope`)."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return ["yes"] * count


# ---------------------------------------------------------------------------------------------
# REC: a fixed box
# ---------------------------------------------------------------------------------------------


def mean_box(boxes: Iterable[Sequence[float]]) -> Box:
    """Coordinate-wise mean of normalised xyxy training boxes (still a valid box: x1 <= x2 holds for
    the means because it holds for every box)."""
    total = [0.0, 0.0, 0.0, 0.0]
    count = 0
    for box in boxes:
        if len(box) != 4:
            raise ValueError(f"a box is 4 numbers (x1, y1, x2, y2), got {box!r}")
        for i, value in enumerate(box):
            total[i] += float(value)
        count += 1
    if count == 0:
        raise ValueError("mean_box needs at least one training box")
    return tuple(v / count for v in total)  # type: ignore[return-value]


def box_predictions(count: int, box: Sequence[float] = CENTRE_BOX, fmt: str = "int1000") -> list[str]:
    """`count` copies of `box` written as `(x1,y1),(x2,y2)` text in `fmt` (feed to `score_grounding`
    with the same `fmt`)."""
    if fmt not in COORDINATE_FORMATS:
        raise ValueError(f"coordinate format must be one of {COORDINATE_FORMATS}, got {fmt!r}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return [format_box(box, fmt)] * count


# ---------------------------------------------------------------------------------------------
# Captioning: the most common training caption
# ---------------------------------------------------------------------------------------------


def most_common_caption(captions: Iterable[str]) -> str:
    """The caption that occurs most often in the training split (exact string match)."""
    counts = Counter(captions)
    if not counts:
        raise ValueError("most_common_caption needs at least one training caption")
    return _most_common(counts)


def constant_caption_predictions(train_captions: Iterable[str], image_ids: Iterable[Any]) -> dict[Any, str]:
    """image_id -> the most common training caption, for every id (feed to `cider`)."""
    caption = most_common_caption(train_captions)
    return {image_id: caption for image_id in image_ids}
