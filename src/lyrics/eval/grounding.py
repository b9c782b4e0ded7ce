"""Referring expression comprehension: Acc@0.5 from boxes written in generated text (RefCOCO,
RefCOCO+, RefCOCOg; paper Table 3).

The first box in the answer is read with `lyrics.refiner.spatial.parse_first_box`, the same parser
the chat and the training data use, in the coordinate format the model writes ("int1000": integers
in [0, 1000), Qwen-VL style; "unit3": [0, 1] with 3 decimals, Shikra style). The prediction is
correct when IoU >= 0.5 with the normalised ground-truth box (Qwen-VL's `evaluate_grounding.py`
uses `>=`; the paper's "higher than 0.5" differs only on exact ties). Text without a box is
wrong, and the share of such answers is reported, because a model that stops writing boxes looks
very different from one that writes bad boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lyrics.refiner.spatial import COORDINATE_FORMATS, Box, box_iou, parse_first_box

IOU_THRESHOLD = 0.5


@dataclass
class GroundingHit:
    """One REC answer: the parsed normalised box (`None` if none could be read), its IoU with the
    ground truth (0 without a box), and whether IoU >= the threshold."""

    box: Box | None
    iou: float
    correct: bool


def _check_box(box: Sequence[float], where: str) -> Box:
    if len(box) != 4:
        raise ValueError(f"{where}: a box is 4 numbers (x1, y1, x2, y2), got {box!r}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (0.0 <= x1 <= x2 <= 1.0 and 0.0 <= y1 <= y2 <= 1.0):
        raise ValueError(f"{where}: expected a normalised xyxy box in [0, 1] with x1<=x2, y1<=y2, got {box!r}")
    return (x1, y1, x2, y2)


def grounding_hit(
    text: str, target: Sequence[float], fmt: str = "int1000", threshold: float = IOU_THRESHOLD
) -> GroundingHit:
    """Score one generated answer against a normalised xyxy ground-truth box."""
    if fmt not in COORDINATE_FORMATS:
        raise ValueError(f"coordinate format must be one of {COORDINATE_FORMATS}, got {fmt!r}")
    gold = _check_box(target, "target")
    box = parse_first_box(text, fmt) if isinstance(text, str) else None
    if box is None:
        return GroundingHit(box=None, iou=0.0, correct=False)
    iou = box_iou(box, gold)
    return GroundingHit(box=box, iou=iou, correct=iou >= threshold)


@dataclass
class GroundingScore:
    """Split-level REC result: Acc@threshold in [0, 1], the share of answers without a readable box,
    the mean IoU (0 for unparsed answers), the count, and the per-answer hits in input order."""

    accuracy: float
    parse_failure_rate: float
    mean_iou: float
    count: int
    hits: list[GroundingHit]


def score_grounding(
    texts: Sequence[str],
    targets: Sequence[Sequence[float]],
    fmt: str = "int1000",
    threshold: float = IOU_THRESHOLD,
) -> GroundingScore:
    """Acc@0.5 over a split; `texts[i]` is the generated answer for ground-truth box `targets[i]`."""
    if len(texts) != len(targets):
        raise ValueError(f"texts ({len(texts)}) and targets ({len(targets)}) must have the same length")
    if not texts:
        raise ValueError("score_grounding needs at least one answer")
    hits = []
    for position, (text, target) in enumerate(zip(texts, targets)):
        try:
            hits.append(grounding_hit(text, target, fmt, threshold))
        except ValueError as err:
            raise ValueError(f"answer #{position}: {err}") from None
    n = len(hits)
    return GroundingScore(
        accuracy=sum(h.correct for h in hits) / n,
        parse_failure_rate=sum(h.box is None for h in hits) / n,
        mean_iou=sum(h.iou for h in hits) / n,
        count=n,
        hits=hits,
    )
