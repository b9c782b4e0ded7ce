"""Referential dialogue: Shikra's GPT4Gen-RD JSON lines (e.g. `GPT4GEN_RD_BoxCoT_train.jsonl`)::

    {"img_path": str, "boxes": [[x1, y1, x2, y2], ...] (pixels),
     "question": str with "<boxes>" placeholders, "question_boxes_seq": [[box indices], ...],
     "answer": str with "<boxes>" placeholders, "answer_boxes_seq": [[...], ...],
     "cot_with_ans": str (optional)}

Placeholder k of a text stands for the boxes listed in its `*_boxes_seq[k]`. Image sizes are not in
the file (they come from the images); image: `image_root / <img_path>`.

Shikra's public release marks the referred phrase instead, `<ph_st>the man<ph_ed>`, and there
`answer_boxes_seq` belongs to `cot_with_ans` (the answer has no boxes). Both spellings are read: a
marked phrase becomes `the man<boxes>` with `phrases[k] = "the man"`, and `answer_boxes_seq` is
attached to whichever of `answer` / `cot_with_ans` has that many placeholders.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lyrics.data.official.common import FormatError, get, read_jsonl, resolve
from lyrics.data.official.samples import BoxedText, DialogueSample

BOXES_PLACEHOLDER = "<boxes>"
PHRASE_START, PHRASE_END = "<ph_st>", "<ph_ed>"
_UNIT = re.compile(re.escape(PHRASE_START) + r"(.*?)" + re.escape(PHRASE_END) + "|" + re.escape(BOXES_PLACEHOLDER), re.DOTALL)


def _normalise(text: str) -> tuple[str, list[str | None]]:
    """Rewrite phrase markers as `phrase<boxes>`; return the text and one phrase (or None) per placeholder."""
    phrases: list[str | None] = []

    def unit(match: re.Match) -> str:
        if match.group(0) == BOXES_PLACEHOLDER:
            phrases.append(None)
            return BOXES_PLACEHOLDER
        phrases.append(match.group(1).strip() or None)
        return match.group(1) + BOXES_PLACEHOLDER

    return _UNIT.sub(unit, text), phrases


def _check_seq(seq: object, key: str, count: int, n_boxes: int, path: Path, where: str) -> list[list[int]]:
    if not isinstance(seq, list) or len(seq) != count:
        size = len(seq) if isinstance(seq, list) else type(seq).__name__
        raise FormatError(path, f"{size} entries for {count} '{BOXES_PLACEHOLDER}' placeholders", where, key)
    for k, group in enumerate(seq):
        if not isinstance(group, list) or not group or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n_boxes for i in group
        ):
            raise FormatError(path, f"entry {k} must be a non-empty list of indices into {n_boxes} boxes, got {group!r}", where, key)
    return [list(group) for group in seq]


def read_shikra_rd(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> list[DialogueSample]:
    path = Path(path)
    samples = []
    for index, (number, row) in enumerate(read_jsonl(path)):
        where = f"line {number}"
        boxes = []
        for k, box in enumerate(get(row, "boxes", list, path, where)):
            if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
                raise FormatError(path, f"box {k} must be [x1, y1, x2, y2] numbers, got {box!r}", where, "boxes")
            boxes.append(tuple(float(v) for v in box))
        q_text, q_phrases = _normalise(get(row, "question", str, path, where))
        a_text, a_phrases = _normalise(get(row, "answer", str, path, where))
        cot_raw = get(row, "cot_with_ans", (str, type(None)), path, where, default=None)
        c_text, c_phrases = _normalise(cot_raw) if cot_raw is not None else (None, [])
        question = BoxedText(q_text, _check_seq(row.get("question_boxes_seq", []), "question_boxes_seq", len(q_phrases), len(boxes), path, where), q_phrases)
        a_seq = row.get("answer_boxes_seq", []) or []
        cot = None
        if c_text is not None and len(a_phrases) != len(a_seq) and len(c_phrases) == len(a_seq):
            # Shikra's release: the boxes belong to the chain-of-thought answer.
            cot = BoxedText(c_text, _check_seq(a_seq, "answer_boxes_seq", len(c_phrases), len(boxes), path, where), c_phrases)
            a_seq = []
        answer = BoxedText(a_text, _check_seq(a_seq, "answer_boxes_seq", len(a_phrases), len(boxes), path, where), a_phrases)
        if cot is None and c_text is not None:
            if c_phrases:
                raise FormatError(path, "has box placeholders but answer_boxes_seq belongs to 'answer'", where, "cot_with_ans")
            cot = BoxedText(c_text, [], [])
        samples.append(
            DialogueSample(
                index=index,
                image_path=resolve(image_root, get(row, "img_path", str, path, where)),
                boxes=boxes,
                question=question,
                answer=answer,
                cot=cot,
            )
        )
    return samples
