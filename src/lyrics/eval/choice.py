"""Multiple-choice accuracy (ScienceQA-IMG, A-OKVQA MC).

A generated answer is mapped to an option index, then compared with the gold index. Models answer
with a letter ("B", "(b)", "b.", "The answer is (B).") or with the option's text, so the parser tries,
in order:

1. the whole answer is a letter, optionally in parentheses and/or followed by ".", ":" or ")";
2. the whole answer equals one option's text (case, surrounding space and final periods ignored);
3. a letter after "answer is" / "answer:" / "option" (ScienceQA's `The answer is X.` convention; a lower-case
   letter counts only in parentheses or at the very end, so "the answer is a dog" is not "A");
4. a leading "B." / "(B)" / "B)" / "B:" followed by more text;
5. exactly one option's text occurring as whole words in the answer (an option contained in a
   longer matching option, e.g. "red" inside "dark red", yields to it).

A letter beyond the number of options does not count. If nothing parses, the choice is `None` and
the question is wrong (LLaVA's ScienceQA script picks a random option instead; we do not, so scores
are deterministic and an unparseable answer never earns credit by luck).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

_BARE_LETTER = re.compile(r"\(?([A-Za-z])\)?[.:)]?")
# "answer is"/"answer:"/"option" in any case; the letter itself is case-sensitive (see rule 3).
_ANSWER_LETTER = re.compile(r"(?i:answer\s*(?:is|:)|option)\s*:?\s*(?:\(([A-Za-z])\)|([A-Z])(?![\w'])|([a-z])\.?\s*$)")
_LEADING_LETTER = re.compile(r"\(?([A-Za-z])[.):]\s+\S")


def _norm(text: str) -> str:
    return " ".join(text.strip().rstrip(".").lower().split())


def _letter_index(letter: str | None, n_options: int) -> int | None:
    if not letter:
        return None
    index = string.ascii_uppercase.index(letter.upper())
    return index if index < n_options else None


def parse_choice(prediction: str, options: Sequence[str]) -> int | None:
    """The option index a generated answer picks, or `None` if it cannot be read.

    Args:
        prediction: generated text.
        options: the option texts in order; option `i` has letter `"ABC..."[i]`.
    """
    if not options:
        raise ValueError("parse_choice needs at least one option")
    if len(options) > len(string.ascii_uppercase):
        raise ValueError(f"at most {len(string.ascii_uppercase)} options are supported, got {len(options)}")
    if not isinstance(prediction, str):
        return None
    text = prediction.strip()
    n = len(options)

    match = _BARE_LETTER.fullmatch(text)
    if match and (index := _letter_index(match.group(1), n)) is not None:
        return index

    normalised = _norm(text)
    for index, option in enumerate(options):
        if normalised and normalised == _norm(option):
            return index

    for match in _ANSWER_LETTER.finditer(text):
        paren, upper, lower = match.groups()
        if (index := _letter_index(paren or upper or lower, n)) is not None:
            return index

    match = _LEADING_LETTER.match(text)
    if match and (index := _letter_index(match.group(1), n)) is not None:
        return index

    found = [
        index
        for index, option in enumerate(options)
        if _norm(option) and re.search(r"(?<!\w)" + re.escape(_norm(option)) + r"(?!\w)", normalised)
    ]
    found = [i for i in found if not any(i != j and _norm(options[i]) in _norm(options[j]) for j in found)]
    return found[0] if len(set(_norm(options[i]) for i in found)) == 1 else None


@dataclass
class ChoiceResult:
    """One multiple-choice question: the parsed option index (`None` = unparseable) and whether it
    equals the gold index."""

    choice: int | None
    correct: bool


def multiple_choice(prediction: str, options: Sequence[str], answer_index: int) -> ChoiceResult:
    """Score one multiple-choice answer; `answer_index` is the gold option's 0-based index."""
    if not 0 <= answer_index < len(options):
        raise ValueError(f"answer_index {answer_index} is out of range for {len(options)} options")
    choice = parse_choice(prediction, options)
    return ChoiceResult(choice=choice, correct=choice == answer_index)


@dataclass
class MultipleChoiceScore:
    """Split-level multiple-choice accuracy in [0, 1], the share of unparseable answers, the count."""

    accuracy: float
    unparsed_rate: float
    count: int


def score_multiple_choice(
    predictions: Sequence[str], options: Sequence[Sequence[str]], answer_indices: Sequence[int]
) -> MultipleChoiceScore:
    """Accuracy over a split; the three sequences are aligned question by question."""
    if not (len(predictions) == len(options) == len(answer_indices)):
        raise ValueError(
            f"predictions ({len(predictions)}), options ({len(options)}) and answer_indices "
            f"({len(answer_indices)}) must have the same length"
        )
    if not predictions:
        raise ValueError("score_multiple_choice needs at least one question")
    results = []
    for position, (pred, opts, gold) in enumerate(zip(predictions, options, answer_indices)):
        try:
            results.append(multiple_choice(pred, opts, gold))
        except ValueError as err:
            raise ValueError(f"question #{position}: {err}") from None
    return MultipleChoiceScore(
        accuracy=sum(r.correct for r in results) / len(results),
        unparsed_rate=sum(r.choice is None for r in results) / len(results),
        count=len(results),
    )
