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
acc+ over pairs of CONSECUTIVE lines of the result file (the official tool never looks at the image
names: rows A1, B1, A2, B2 make the pairs (A1, B1) and (A2, B2)), score = 100 * acc + 100 * acc+.
An odd number of lines is refused, as it stops the official tool. Grouping by image name instead is
an option (`pairing="image"`). Perception sums the scores of all 10 perception subtasks, cognition
those of the 4 cognition subtasks; a group with only some of its subtasks is refused by name (or,
with `allow_partial`, left without a sum) instead of being summed over fewer. Other subtask names
are scored but summed into neither (the official tool does not read them).
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
MME_GROUPS = {"perception": MME_PERCEPTION, "cognition": MME_COGNITION}
MME_PAIRINGS = ("lines", "image")


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


class MMEIncompleteError(ValueError):
    """Some but not all subtasks of a group (perception or cognition) are present: the official tool
    reads every one of them, so a sum over fewer would not be comparable with published numbers."""


@dataclass
class MMESubtaskResult:
    """One MME subtask: acc and acc+ as fractions, score = 100*acc + 100*acc+ (0..200).

    `images` counts the acc+ units: line pairs with the default pairing, image names with
    `pairing="image"`."""

    acc: float
    acc_plus: float
    score: float
    questions: int
    images: int
    other: int  # predictions that parsed to neither yes nor no


@dataclass
class MMEResult:
    """MME: per-subtask results and the perception / cognition sums of subtask scores.

    A group's sum is None unless every one of its subtasks was scored (never a partial sum)."""

    subtasks: dict[str, MMESubtaskResult] = field(default_factory=dict)
    perception: float | None = None
    cognition: float | None = None

    @property
    def total(self) -> float | None:
        """perception + cognition, when both are complete."""
        if self.perception is None or self.cognition is None:
            return None
        return self.perception + self.cognition


def _acc_plus_units(rows: Sequence[MMERow], correct: Sequence[bool], name: str, pairing: str) -> list[bool]:
    """Per acc+ unit, whether all of its questions are right."""
    if pairing == "lines":
        if len(rows) % 2:
            raise ValueError(
                f"MME {name}: {len(rows)} lines, an odd number; acc+ pairs consecutive lines (1-2, 3-4, ...) as the "
                f"official calculation.py does, and that tool stops on an unpaired last line"
            )
        return [correct[i] and correct[i + 1] for i in range(0, len(rows), 2)]
    if pairing == "image":
        per_image: dict[str, bool] = {}
        for row, right in zip(rows, correct):
            per_image[row.image] = per_image.get(row.image, True) and right
        return list(per_image.values())
    raise ValueError(f"MME pairing must be one of {MME_PAIRINGS}, got {pairing!r}")


def score_mme_subtask(rows: Sequence[MMERow | Sequence[str]], name: str = "subtask", pairing: str = "lines") -> MMESubtaskResult:
    """acc, acc+ and score of one subtask, rows in result-file order.

    Args:
        rows: (image, question, gold, prediction) per question.
        name: the subtask, for error messages.
        pairing: how acc+ groups questions. "lines" (default, as the official calculation.py):
            rows 1-2, 3-4, ... form the pairs whatever their image names, so the rows must be in the
            question files' order and their number even. "image": rows grouped by image name; an
            image counts when all of its questions are right (differs from the official tool when an
            image has other than two questions, or its two questions are not adjacent).
    """
    if not rows:
        raise ValueError(f"MME {name}: no questions")
    checked, correct = [], []
    other = 0
    for position, row in enumerate(rows):
        if len(row) != 4:
            raise ValueError(f"MME {name}, row #{position}: expected (image, question, answer, prediction), got {row}")
        row = MMERow(*row)
        gold = row.answer.lower()
        if gold not in ("yes", "no"):
            raise ValueError(f"MME {name}, row #{position} ({row.image}): gold answer must be yes or no, got {row.answer!r}")
        parsed = parse_mme_answer(row.prediction)
        other += parsed == "other"  # always wrong: the official tool maps it to -1
        checked.append(row)
        correct.append(parsed == gold)
    units = _acc_plus_units(checked, correct, name, pairing)
    acc = sum(correct) / len(rows)
    acc_plus = sum(units) / len(units)
    return MMESubtaskResult(
        acc=acc, acc_plus=acc_plus, score=100 * acc + 100 * acc_plus, questions=len(rows), images=len(units), other=other,
    )  # fmt: skip


def missing_mme_subtasks(names: Iterable[str]) -> dict[str, list[str]]:
    """{group: its absent subtasks} for each group of which some but not all subtasks are in `names`."""
    names = set(names)
    out = {}
    for group, members in MME_GROUPS.items():
        missing = [n for n in members if n not in names]
        if missing and len(missing) < len(members):
            out[group] = missing
    return out


def _incomplete_message(incomplete: dict[str, list[str]], where: str) -> str:
    parts = []
    for group, missing in incomplete.items():
        total = len(MME_GROUPS[group])
        files = ", ".join(f"{n}.txt" for n in missing)
        parts.append(f"{group} has {total - len(missing)} of its {total} subtasks; missing: {files}")
    return (
        f"MME{where}: {'; '.join(parts)}. The official calculation.py sums all of a group's subtasks, so a "
        f"partial sum is not comparable; add the missing result files (or score the present subtasks one by one)"
    )


def score_mme(
    subtasks: Mapping[str, Sequence[MMERow | Sequence[str]]], pairing: str = "lines", allow_partial: bool = False
) -> MMEResult:
    """Score MME from `{subtask name: rows}` (names as in the official tool, e.g. "existence").

    A group (perception: 10 subtasks, cognition: 4) of which only some subtasks are given raises
    `MMEIncompleteError` naming the missing ones; with `allow_partial` its sum is None instead. A
    group that is absent altogether is None. Other subtask names are scored but summed into neither
    group (the official tool does not read them).
    """
    incomplete = missing_mme_subtasks(subtasks)
    if incomplete and not allow_partial:
        raise MMEIncompleteError(_incomplete_message(incomplete, ""))
    result = MMEResult()
    for name, rows in subtasks.items():
        result.subtasks[name] = score_mme_subtask(rows, name, pairing)
    for group, members in MME_GROUPS.items():
        if all(n in result.subtasks for n in members):
            setattr(result, group, sum(result.subtasks[n].score for n in members))
    return result


def read_mme_results(directory: str | Path, names: Iterable[str] | None = None) -> dict[str, list[MMERow]]:
    """`{subtask: rows}` from a directory of official-format `<subtask>.txt` result files.

    Each line is `image<TAB>question<TAB>gold<TAB>prediction`. The prediction is everything after
    the third tab: a tab inside a model's answer stays part of the answer (the official tool stops
    with an unpacking error there; only the answer's first characters decide it anyway). Blank lines
    are refused, as they stop the official tool too and would shift the line pairs of acc+.

    Args:
        directory: holds one tab-separated file per subtask.
        names: subtasks to read; default: every `*.txt` in the directory, in sorted order. Without
            `names`, a directory holding some but not all perception (or cognition) files raises
            `MMEIncompleteError` naming the missing files.
    """
    directory = Path(directory)
    if names is None:
        paths = sorted(directory.glob("*.txt"))
        incomplete = missing_mme_subtasks(p.stem for p in paths)
        if incomplete:
            raise MMEIncompleteError(_incomplete_message(incomplete, f" results in {directory}"))
    else:
        paths = [directory / f"{n}.txt" for n in names]
    out: dict[str, list[MMERow]] = {}
    for path in paths:
        rows = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    raise ValueError(f"{path}:{number}: blank line (every line is one question; the official tool stops here too)")
                fields = line.split("\t", 3)
                if len(fields) != 4:
                    raise ValueError(f"{path}:{number}: expected 4 tab-separated fields, got {len(fields)}")
                rows.append(MMERow(*fields))
        out[path.stem] = rows
    return out


def mme_result_lines(rows: Iterable[MMERow]) -> str:
    """Rows as an official result file (what LLaVA's `convert_answer_to_mme.py` writes, read by
    `calculation.py`): tabs and line breaks inside a prediction become spaces so every question
    stays one line of four fields (neither can change what the parser reads)."""
    out = []
    for row in rows:
        prediction = " ".join(row.prediction.replace("\t", " ").splitlines())
        out.append("\t".join((row.image, row.question, row.answer, prediction)) + "\n")
    return "".join(out)
