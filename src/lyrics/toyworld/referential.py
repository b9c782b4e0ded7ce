"""The toy world's referential-dialogue split, scored (Table 6's Shikra GPT4Gen-RD at toy scale).

Each test turn asks about one boxed object: its colour, its shape, what it is, or what is next to it
(`toyworld/questions.py`, `dialogues`), and its answer names the object and boxes it. The prompts are
built exactly as training builds them: the split's JSON lines go through the same converter
(`lyrics.data.convert.dialogue.convert_shikra_rd`: a Table 10 template with the question's box in
its `{Tag & Bbox}` slot) and are rendered in the checkpoint's coordinate format. Two numbers:

* naming accuracy: the answer names what the truth names (the colour, the shape, the description,
  or the neighbour's tag), read from the answer with its box markup removed;
* box Acc@0.5: the answer's first box has IoU >= 0.5 with the truth's box; reported over all turns
  and over the "next to" turns alone, the only ones whose answer box is not the question's region.

Baselines, scored the same way: naming, the most common named thing per kind of question in the
training split; boxes, the question's own region (right whenever the answer boxes the asked object).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

# question opening -> (kind, what the answer names, as a pattern over the lower-cased plain answer)
KINDS = (
    ("what color is the object", "color", re.compile(r"\bis (\w+)\s*\.?$")),
    ("what shape is the", "shape", re.compile(r"\bis an? (\w+)\s*\.?$")),
    ("what is next to the", "neighbour", re.compile(r"^the (.+?) is next to it")),
    ("what is the object", "identity", re.compile(r"\bit is an? (.+?)\s*\.?$")),
)
MARKUP = re.compile(r"<Bbox>.*?</Box>|</?T>|<br>|</br>", re.DOTALL)
MAX_NEW_TOKENS = 40


def kind_of(question: str) -> tuple[str, re.Pattern] | None:
    text = question.strip().lower()
    return next(((kind, pattern) for start, kind, pattern in KINDS if text.startswith(start)), None)


def named(answer: str, pattern: re.Pattern) -> str | None:
    """What an answer names, its box markup removed (None when it has no such phrase)."""
    plain = " ".join(MARKUP.sub(" ", answer).lower().split()).replace(" .", ".")
    match = pattern.search(plain)
    return match.group(1).strip() if match else None


def turns(world: Path, split: str, limit: int | None) -> list[dict[str, Any]]:
    """The split's turns as training renders them: the prompt's turns, the truth answer (placeholders),
    the boxes (normalised), the kind of question and the image path."""
    from lyrics.data.convert.common import ConvertOptions
    from lyrics.data.convert.dialogue import convert_shikra_rd

    source = world / "shikra_rd" / f"GPT4GEN_RD_BoxCoT_{split}.jsonl"
    images = world / "images" / f"toy{split}"
    questions = [json.loads(line)["question"] for line in source.read_text().splitlines() if line.strip()]
    conversion = convert_shikra_rd([source], ConvertOptions(images=images))
    if conversion.skipped:
        raise ValueError(f"{source}: {len(conversion.skipped)} turns could not be converted, e.g. {conversion.skipped[0]}")
    out = []
    for record in conversion.records[:limit]:
        kind = kind_of(questions[record.meta["index"]])
        if kind is None:
            raise ValueError(f"{source} line {record.meta['index'] + 1}: a question of no known kind: {questions[record.meta['index']]!r}")
        out.append({"record": record, "kind": kind, "image": images / record.image})
    return out


def _answer_box(record) -> list[float]:
    """The normalised box of the truth answer's first placeholder."""
    from lyrics.data.records import PLACEHOLDER

    index = int(PLACEHOLDER.search(record.conversations[1]["value"]).group(1))
    return list(record.boxes[index])


def score(answers: list[str], items: list[dict[str, Any]], fmt: str) -> dict[str, float]:
    """Naming accuracy and box Acc@0.5 (all turns, "next to" turns) of `answers`, in percent."""
    from lyrics.data.records import render_text
    from lyrics.refiner.spatial import box_iou, tagged_boxes

    names, boxes, neighbours = [], [], []
    for answer, item in zip(answers, items):
        record, (kind, pattern) = item["record"], item["kind"]
        truth = named(render_text(record.conversations[1]["value"], record.boxes, fmt), pattern)
        names.append(named(answer, pattern) == truth)
        found = tagged_boxes(answer, fmt)
        hit = bool(found) and box_iou(found[0][1], _answer_box(record)) >= 0.5
        boxes.append(hit)
        if kind == "neighbour":
            neighbours.append(hit)
    mean = lambda xs: 100.0 * sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    return {"naming_accuracy": mean(names), "Acc@0.5": mean(boxes), "neighbour_Acc@0.5": mean(neighbours)}


def baseline_answers(world: Path, items: list[dict[str, Any]], fmt: str) -> list[str]:
    """Per turn: the training split's most common named thing for its kind of question, boxed with
    the question's own region, in the kind's answer wording."""
    from lyrics.data.records import render_text

    common: dict[str, Counter] = {}
    for item in turns(world, "train", None):
        record, (kind, pattern) = item["record"], item["kind"]
        common.setdefault(kind, Counter())[named(render_text(record.conversations[1]["value"], record.boxes, fmt), pattern)] += 1
    out = []
    for item in items:
        record, (kind, _) = item["record"], item["kind"]
        region = render_text("<box:0>", record.boxes, fmt)
        thing = common[kind].most_common(1)[0][0] if kind in common else ""
        out.append(
            {
                "color": f"The object {region} is {thing}.",
                "shape": f"The object {region} is a {thing}.",
                "identity": f"It is a {thing} {region}.",
                "neighbour": f"The {thing} {region} is next to it.",
            }[kind]
        )
    return out


def evaluate_referential(predictor, world: Path, split: str, limit: int | None, out_dir: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Score `predictor` (a `lyrics eval` predictor) on the split's turns; the answers are kept in
    `out_dir/predictions.json` (written atomically; a rerun with the same turns reuses them)."""
    from lyrics.atomic import atomic_write_text
    from lyrics.data.records import render_conversation
    from lyrics.eval.predictor import Prompt

    fmt = predictor.coordinate_format
    items = turns(world, split, limit)
    prompts = [Prompt(render_conversation(item["record"], fmt)[:1], [item["image"]], MAX_NEW_TOKENS, key=item["record"].id) for item in items]
    saved = out_dir / "predictions.json"
    identity = [p.key for p in prompts]
    cached = json.loads(saved.read_text()) if saved.is_file() else None
    if cached is not None and cached.get("ids") == identity:
        answers = cached["answers"]
    else:
        predictions = predictor.predict(prompts)
        failed = [(p.key, r.error) for p, r in zip(prompts, predictions) if r.error]
        if failed:
            raise ValueError(f"referential dialogue: {len(failed)} prompts failed, e.g. {failed[0]}")
        answers = [r.text for r in predictions]
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, json.dumps({"ids": identity, "answers": answers}, indent=1))
    return score(answers, items, fmt), score(baseline_answers(world, items, fmt), items, fmt)
