"""Open-ended answer scoring: VQA accuracy (VQAv2, OK-VQA, VizWiz, TextVQA) and exact match (GQA,
OCR-VQA).

VQA accuracy follows the official tool, GT-Vision-Lab/VQA
`PythonEvaluationTools/vqaEvaluation/vqaEval.py` (the version after the 2021 "processing answers"
fix), rule for rule:

1. Newlines and tabs become spaces, then the prediction and every human answer are stripped.
2. Only if the human answers are not all identical, the prediction and every human answer are
   normalised (`normalize_vqa_answer`: punctuation, then number words, articles, contractions).
   When all annotators agree nothing is normalised, so `"Yes"` scores 0 against ten `"yes"`.
3. Per question: for each of the 10 leave-one-out subsets of 9 human answers, `min(1, matches / 3)`;
   the question's accuracy is the mean of the 10 values (1 matching annotator -> 0.3, 2 -> 0.6,
   3 -> 0.9, 4 or more -> 1.0).
4. Split level: the mean over questions, overall, per question type and per answer type, reported
   in percent rounded to 2 decimals.

Harnesses clean a model's answer with the EvalAI answer processor before writing the results file
(LLaVA's `scripts/convert_vqav2_for_submission.py` does, with mmf's `EvalAIAnswerProcessor`);
`evalai_clean_answer` is that step, and `score_vqa(..., clean_predictions=True)` applies it. It is a
pre-step on predictions, not part of the official scorer: say which one a reported number used.

No torch here: plain Python over plain data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------------------------------------
# The official normalisation tables (facts from vqaEval.py, written in our own layout).
# ---------------------------------------------------------------------------------------------

# Characters the official tool removes or replaces by a space (see `_process_punctuation`).
# Apostrophes and colons are not in the list: "don't" keeps its apostrophe.
_PUNCTUATION = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip
# A comma between two digits ("1,000") switches every punctuation mark to removal.
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
# The official pattern is "(?!<=\d)(\.)(?!\d)": its first group is a look-AHEAD for the literal text
# "<=digit" (a typo for a look-behind), which never matches before a ".", so the effective rule is
# "drop every period that is not followed by a digit": "yes." -> "yes", "3.5" kept, "3." -> "3".
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
# The official call passes `re.UNICODE` (== 32) positionally, where `Pattern.sub` expects `count`:
# at most 32 periods are removed. Kept so that even pathological strings score identically.
_OFFICIAL_PERIOD_COUNT = 32

_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = frozenset({"a", "an", "the"})

# Missing-apostrophe spellings -> the form annotators wrote, applied word by word after lower-casing.
# The table is the official one, including its oddities: the capitalised keys ("Im", "Ive", ...) can
# never match lower-cased words, and "somebody'd" maps to "somebodyd". Written as `key=value` pairs.
_CONTRACTIONS: dict[str, str] = dict(
    pair.split("=")
    for pair in """
    aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
    couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
    hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's
    howd=how'd howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd
    itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't
    mightnt've=mightn't've mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've
    neednt=needn't notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at
    'ow'sat='ow's'at shant=shan't shed've=she'd've she'dve=she'd've she's=she's shouldve=should've
    shouldnt=shouldn't shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd
    somebodyd've=somebody'd've somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's
    someoned=someone'd someoned've=someone'd've someone'dve=someone'd've someonell=someone'll
    someones=someone's somethingd=something'd somethingd've=something'd've
    something'dve=something'd've somethingll=something'll thats=that's thered=there'd
    thered've=there'd've there'dve=there'd've therere=there're theres=there's theyd=they'd
    theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've twas='twas
    wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll
    whatre=what're whats=what's whatve=what've whens=when's whered=where'd wheres=where's
    whereve=where've whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll whos=who's
    whove=who've whyll=why'll whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't
    wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll
    yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've
    you'dve=you'd've youll=you'll youre=you're youve=you've
    """.split()
)

# The EvalAI answer processor (mmf `EvalAIAnswerProcessor`) finds digit-separated commas with this
# pattern instead; it only matters for `evalai_clean_answer`, which removes commas before looking.
_EVALAI_COMMA_BETWEEN_DIGITS = re.compile(r"(?<=\d)(,)+(?=\d)")


def _process_punctuation(text: str, comma_pattern: re.Pattern[str] = _COMMA_BETWEEN_DIGITS) -> str:
    """The official punctuation rule. For each mark: if it touches a space anywhere in the ORIGINAL
    text (or the text has a comma between digits), every occurrence is deleted; otherwise every
    occurrence becomes a space. So "t-shirt" -> "t shirt" but "t - shirt" -> "t  shirt" and
    "1,000" -> "1000"."""
    out = text
    remove_all = comma_pattern.search(text) is not None
    for mark in _PUNCTUATION:
        if remove_all or (mark + " ") in text or (" " + mark) in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_OFFICIAL_PERIOD_COUNT)


def _process_digits_articles(text: str) -> str:
    """Lower-case, split on whitespace, number words -> digits, drop articles, then restore
    contractions; words are re-joined by single spaces."""
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words)


def _strip_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_vqa_answer(text: str) -> str:
    """The official VQA answer normalisation: `"Two"` -> `"2"`, `"a dog"` -> `"dog"`,
    `"dont"` -> `"don't"`, `"yes."` -> `"yes"`, `"1,000"` -> `"1000"`, `"t-shirt"` -> `"t shirt"`."""
    return _process_digits_articles(_process_punctuation(_strip_whitespace(text)))


def evalai_clean_answer(text: str) -> str:
    """The EvalAI answer processor that VQA harnesses run on a model's answer before scoring:
    lower-case, delete "," and "?", split "'s" off its word, then the official punctuation and
    digit/article/contraction rules. Use it on predictions only, and say so when reporting."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = _strip_whitespace(text)
    return _process_digits_articles(_process_punctuation(text, _EVALAI_COMMA_BETWEEN_DIGITS))


def _answer_text(answer: Any, where: str) -> str:
    """Human answers come as strings or as official `{"answer": str, "answer_id": int, ...}` dicts."""
    if isinstance(answer, str):
        return answer
    if isinstance(answer, Mapping) and isinstance(answer.get("answer"), str):
        return answer["answer"]
    raise ValueError(f"{where}: a human answer must be a string or a dict with a string 'answer', got {answer!r}")


def vqa_accuracy(prediction: str, answers: Sequence[Any]) -> float:
    """VQA accuracy of one prediction in [0, 1], exactly as the official tool scores one question.

    Args:
        prediction: the model's answer text.
        answers: the human answers (10 in VQAv2, OK-VQA, VizWiz and TextVQA), as strings or official
            answer dicts. Any non-zero count works; the leave-one-out is by position, so identical
            answers from different annotators each count.

    Returns:
        mean over the leave-one-out subsets of `min(1, matches / 3)`; not rounded.
    """
    if not isinstance(prediction, str):
        raise ValueError(f"prediction must be a string, got {type(prediction).__name__}")
    if len(answers) == 0:
        raise ValueError("vqa_accuracy needs at least one human answer")
    human = [_strip_whitespace(_answer_text(a, "answers")) for a in answers]
    predicted = _strip_whitespace(prediction)
    if len(set(human)) > 1:  # the official tool normalises only when annotators disagree
        human = [normalize_vqa_answer(a) for a in human]
        predicted = normalize_vqa_answer(predicted)
    matches = sum(a == predicted for a in human)
    # Leaving out a matching answer leaves `matches - 1` matches, leaving out another leaves `matches`.
    total = sum(min(1.0, (matches - (a == predicted)) / 3.0) for a in human)
    return total / len(human)


@dataclass
class VQAResult:
    """Split-level VQA accuracy, in the official tool's units: percent, rounded to `precision`.

    Attributes:
        overall: mean accuracy over all questions.
        per_question_type: mean accuracy per `question_type` (e.g. "what color is the").
        per_answer_type: mean accuracy per `answer_type` ("yes/no", "number", "other").
        per_question: question_id -> unrounded accuracy in [0, 1] (for reports and error analysis).
        count: number of questions scored.
    """

    overall: float
    per_question_type: dict[str, float] = field(default_factory=dict)
    per_answer_type: dict[str, float] = field(default_factory=dict)
    per_question: dict[Any, float] = field(default_factory=dict)
    count: int = 0


def _mean_percent(values: Sequence[float], precision: int) -> float:
    # Python 3 `round` (ties to even on exact binary halves); the official tool ran on Python 2.
    return round(100.0 * sum(values) / len(values), precision)


def _check_ids(expected: Iterable[Any], given: Iterable[Any], what: str) -> None:
    expected_set, given_set = set(expected), set(given)
    missing, extra = expected_set - given_set, given_set - expected_set
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} without a prediction (e.g. {sorted(missing, key=str)[:5]})")
        if extra:
            parts.append(f"{len(extra)} predictions for unknown ids (e.g. {sorted(extra, key=str)[:5]})")
        raise ValueError(f"{what}: predictions must cover exactly the annotated questions: " + "; ".join(parts))


def score_vqa(
    annotations: Sequence[Mapping[str, Any]],
    predictions: Mapping[Any, str],
    *,
    precision: int = 2,
    clean_predictions: bool = False,
) -> VQAResult:
    """Score a whole split like the official tool.

    Args:
        annotations: official annotation dicts (the `"annotations"` list of a VQAv2 annotation file):
            `question_id`, `answers` (list of `{"answer": ...}` dicts or strings), and optionally
            `question_type` / `answer_type` (a question without one counts only in `overall`).
        predictions: question_id -> predicted answer; must cover exactly the annotated questions
            (the official loader asserts the same).
        precision: decimals of the reported percentages (official: 2).
        clean_predictions: apply `evalai_clean_answer` to predictions first (harness convention).

    Returns:
        a `VQAResult`.
    """
    if not annotations:
        raise ValueError("score_vqa needs at least one annotated question")
    ids = []
    for index, ann in enumerate(annotations):
        if "question_id" not in ann or "answers" not in ann:
            raise ValueError(f"annotation #{index} needs 'question_id' and 'answers', has {sorted(ann)}")
        ids.append(ann["question_id"])
    if len(set(ids)) != len(ids):
        raise ValueError("annotations: question_id values must be unique")
    _check_ids(ids, predictions, "score_vqa")

    per_question: dict[Any, float] = {}
    by_qtype: dict[str, list[float]] = {}
    by_atype: dict[str, list[float]] = {}
    for ann in annotations:
        qid = ann["question_id"]
        predicted = predictions[qid]
        if clean_predictions:
            predicted = evalai_clean_answer(predicted)
        try:
            acc = vqa_accuracy(predicted, ann["answers"])
        except ValueError as err:
            raise ValueError(f"question_id {qid!r}: {err}") from None
        per_question[qid] = acc
        if ann.get("question_type") is not None:
            by_qtype.setdefault(str(ann["question_type"]), []).append(acc)
        if ann.get("answer_type") is not None:
            by_atype.setdefault(str(ann["answer_type"]), []).append(acc)
    return VQAResult(
        overall=_mean_percent(list(per_question.values()), precision),
        per_question_type={k: _mean_percent(v, precision) for k, v in by_qtype.items()},
        per_answer_type={k: _mean_percent(v, precision) for k, v in by_atype.items()},
        per_question=per_question,
        count=len(per_question),
    )


# ---------------------------------------------------------------------------------------------
# Exact match (GQA, OCR-VQA)
# ---------------------------------------------------------------------------------------------


def normalize_exact(text: str) -> str:
    """Lower-case, strip whitespace, drop trailing periods.

    GQA's official `eval.py` compares strings as they are; its answers are lower-case words without
    final punctuation, and the usual converter (LLaVA's `convert_gqa_for_eval`) turns a generated
    sentence into a prediction with `rstrip('.').lower()`. We apply the same to BOTH sides, so that
    "Yes." matches "yes" and an answer key with capitals (OCR-VQA titles) still compares fairly, and
    nothing else: "a dog" does not match "dog" (that is what VQA accuracy's normalisation is for).
    """
    return text.strip().rstrip(".").strip().lower()


def exact_match(prediction: str, answer: str | Sequence[str]) -> bool:
    """True if the normalised prediction equals the (or any) normalised answer."""
    candidates = [answer] if isinstance(answer, str) else list(answer)
    target = normalize_exact(prediction)
    return any(target == normalize_exact(a) for a in candidates)


def score_exact_match(predictions: Mapping[Any, str], answers: Mapping[Any, str | Sequence[str]]) -> float:
    """Exact-match accuracy in [0, 1] over a split; `predictions` must cover exactly `answers`."""
    if not answers:
        raise ValueError("score_exact_match needs at least one answer")
    _check_ids(answers, predictions, "score_exact_match")
    return sum(exact_match(predictions[qid], ans) for qid, ans in answers.items()) / len(answers)
