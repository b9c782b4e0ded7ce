"""Yes/no leaderboards: POPE (object hallucination) and MME (perception and cognition), scored with
the parsers of their official tools so numbers compare with published ones.

POPE (`evaluate.py` of AoiDragon/POPE): keep the text before the first "." , delete commas, split on
single spaces; if one of the words is exactly "No", "not" or "no" the answer is no, else yes (so an
empty or off-topic answer counts as yes, and "Not sure" as yes because "Not" is capitalised).
Yes is the positive class. Where the official script would divide by zero (no yes-predictions, or
no yes-labels) we return 0.0 for that ratio instead of crashing.

MME (`eval_tool/calculation.py`): ground truth and prediction are lower-cased; a prediction that is
exactly "yes" or "no" is that answer, otherwise its first 4 characters decide ("yes" inside -> yes,
else "no" inside -> no, else "other", which is always wrong). Per subtask: acc over questions,
acc+ over images (an image counts if both its questions are right), score = 100 * acc + 100 * acc+.
Perception sums the scores of the 10 perception subtasks that are present, cognition those of the 4
cognition subtasks; other subtask names are scored but summed into neither (the official tool skips
them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

# ---------------------------------------------------------------------------------------------
# POPE
# ---------------------------------------------------------------------------------------------

_POPE_NO_WORDS = ("No", "not", "no")


def parse_pope_answer(text: str) -> str:
    """The official POPE answer parser: `"yes"` or `"no"`."""
    first_sentence = text.split(".")[0]
    words = first_sentence.replace(",", "").split(" ")
    return "no" if any(word in _POPE_NO_WORDS for word in words) else "yes"


@dataclass
class POPEResult:
    """POPE metrics, fractions in [0, 1] (yes = positive class), with the confusion counts."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    yes_ratio: float
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def count(self) -> int:
        return self.tp + self.fp + self.tn + self.fn


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def score_pope(labels: Sequence[str], predictions: Sequence[str]) -> POPEResult:
    """POPE over one question file (one sampling setting).

    Args:
        labels: gold answers, each exactly "yes" or "no" (the `label` field of the question file).
        predictions: generated answers aligned with `labels`; parsed with `parse_pope_answer`.
    """
    if len(labels) != len(predictions):
        raise ValueError(f"labels ({len(labels)}) and predictions ({len(predictions)}) must have the same length")
    if not labels:
        raise ValueError("score_pope needs at least one question")
    tp = fp = tn = fn = 0
    for position, (label, text) in enumerate(zip(labels, predictions)):
        if label not in ("yes", "no"):
            raise ValueError(f"label #{position} must be 'yes' or 'no', got {label!r}")
        if not isinstance(text, str):
            raise ValueError(f"prediction #{position} must be a string, got {type(text).__name__}")
        said_yes = parse_pope_answer(text) == "yes"
        if label == "yes":
            tp, fn = tp + said_yes, fn + (not said_yes)
        else:
            fp, tn = fp + said_yes, tn + (not said_yes)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    n = len(labels)
    return POPEResult(
        accuracy=(tp + tn) / n,
        precision=precision,
        recall=recall,
        f1=_ratio(2 * precision * recall, precision + recall),
        yes_ratio=(tp + fp) / n,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
    )


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; blank lines are skipped; errors name the file and line."""
    path = Path(path)
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    return records


def score_pope_files(question_file: str | Path, answer_file: str | Path) -> POPEResult:
    """POPE over a whole question file and the model's answer file, matched by `question_id`.

    The question file is POPE JSON lines (`question_id`, `image`, `text`, `label`). The answer file is
    JSON lines with `question_id` and the generated text under `answer` (POPE) or `text` (LLaVA).
    Every question needs exactly one answer (the official script pairs lines by position instead).
    """
    questions = read_jsonl(question_file)
    answers: dict[Any, str] = {}
    for number, record in enumerate(read_jsonl(answer_file), start=1):
        text = record.get("answer", record.get("text"))
        if "question_id" not in record or not isinstance(text, str):
            raise ValueError(f"{answer_file}: record {number} needs 'question_id' and a string 'answer' or 'text'")
        if record["question_id"] in answers:
            raise ValueError(f"{answer_file}: question_id {record['question_id']!r} is answered twice")
        answers[record["question_id"]] = text
    labels, predictions = [], []
    for number, question in enumerate(questions, start=1):
        qid = question.get("question_id")
        if qid not in answers:
            raise ValueError(f"{answer_file}: no answer for question_id {qid!r} (record {number} of {question_file})")
        if question.get("label") not in ("yes", "no"):
            label = question.get("label")
            raise ValueError(f"{question_file}: record {number} needs label 'yes' or 'no', got {label!r}")
        labels.append(question["label"])
        predictions.append(answers.pop(qid))
    if answers:
        raise ValueError(f"{answer_file}: answers for {len(answers)} unknown question ids, e.g. {list(answers)[:5]}")
    return score_pope(labels, predictions)


# ---------------------------------------------------------------------------------------------
# MME
# ---------------------------------------------------------------------------------------------

MME_PERCEPTION = (
    "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
)  # fmt: skip
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def parse_mme_answer(text: str) -> str:
    """The official MME answer parser on a lower-cased answer: "yes", "no" or "other"."""
    text = text.lower()
    if text in ("yes", "no"):
        return text
    prefix = text[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


class MMERow(NamedTuple):
    """One line of an MME result file: `image<TAB>question<TAB>gold<TAB>prediction`."""

    image: str
    question: str
    answer: str
    prediction: str


@dataclass
class MMESubtaskResult:
    """One MME subtask: acc and acc+ as fractions, score = 100*acc + 100*acc+ (0..200)."""

    acc: float
    acc_plus: float
    score: float
    questions: int
    images: int
    other: int  # predictions that parsed to neither yes nor no


@dataclass
class MMEResult:
    """MME: per-subtask results and the perception / cognition / total sums of subtask scores."""

    subtasks: dict[str, MMESubtaskResult] = field(default_factory=dict)
    perception: float = 0.0
    cognition: float = 0.0

    @property
    def total(self) -> float:
        return self.perception + self.cognition


def score_mme_subtask(rows: Sequence[MMERow | Sequence[str]], name: str = "subtask") -> MMESubtaskResult:
    """acc, acc+ and score of one subtask; every image must have exactly two questions (official)."""
    if not rows:
        raise ValueError(f"MME {name}: no questions")
    per_image: dict[str, list[bool]] = {}
    correct = other = 0
    for position, row in enumerate(rows):
        if len(row) != 4:
            raise ValueError(f"MME {name}, row #{position}: expected (image, question, answer, prediction), got {row}")
        image, _question, answer, prediction = row
        gold = answer.lower()
        if gold not in ("yes", "no"):
            raise ValueError(f"MME {name}, row #{position} ({image}): gold answer must be yes or no, got {answer!r}")
        parsed = parse_mme_answer(prediction)
        other += parsed == "other"
        correct += parsed == gold
        per_image.setdefault(image, []).append(parsed == gold)
    wrong_count = {image: len(v) for image, v in per_image.items() if len(v) != 2}
    if wrong_count:
        examples = dict(list(wrong_count.items())[:5])
        raise ValueError(f"MME {name}: each image needs exactly 2 questions; these do not (image: count): {examples}")
    acc = correct / len(rows)
    acc_plus = sum(all(v) for v in per_image.values()) / len(per_image)
    return MMESubtaskResult(
        acc=acc,
        acc_plus=acc_plus,
        score=100 * acc + 100 * acc_plus,
        questions=len(rows),
        images=len(per_image),
        other=other,
    )


def score_mme(subtasks: Mapping[str, Sequence[MMERow | Sequence[str]]]) -> MMEResult:
    """Score MME from `{subtask name: rows}` (names as in the official tool, e.g. "existence")."""
    result = MMEResult()
    for name, rows in subtasks.items():
        result.subtasks[name] = score_mme_subtask(rows, name)
    result.perception = sum(r.score for n, r in result.subtasks.items() if n in MME_PERCEPTION)
    result.cognition = sum(r.score for n, r in result.subtasks.items() if n in MME_COGNITION)
    return result


def read_mme_results(directory: str | Path, names: Iterable[str] | None = None) -> dict[str, list[MMERow]]:
    """`{subtask: rows}` from a directory of official-format `<subtask>.txt` result files.

    Args:
        directory: holds one tab-separated file per subtask (image, question, gold, prediction).
        names: subtasks to read; default: every `*.txt` in the directory, in sorted order.
    """
    directory = Path(directory)
    paths = [directory / f"{n}.txt" for n in names] if names is not None else sorted(directory.glob("*.txt"))
    out: dict[str, list[MMERow]] = {}
    for path in paths:
        rows = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) != 4:
                    raise ValueError(f"{path}:{number}: expected 4 tab-separated fields, got {len(fields)}")
                rows.append(MMERow(*fields))
        out[path.stem] = rows
    return out
