"""Score a benchmark split's predictions with the official-convention metrics (`lyrics.eval.metrics`).

One function, `score_predictions`, maps a spec's `metric` to the matching scorer and returns flat
numbers in the units the paper's tables use: percent for accuracies (VQA accuracy, exact match,
multiple choice, Acc@0.5, POPE), CIDEr x 100, MME scores as the leaderboard sums them (0..2000 for
perception, 0..800 for cognition). `primary` is the number a table cell shows.

VQA accuracy is reported twice: `vqa_accuracy` applies the EvalAI answer processor to predictions
first (what LLaVA-style harnesses do before writing a submission, and what EvalAI's server applies),
`vqa_accuracy_raw` scores the generated text as it is. Both then go through the official scorer.
A sample whose generation failed (unreadable image) is scored with an empty answer, never skipped,
so a number always covers the whole split; the official parsers decide what an empty answer is
(wrong everywhere except POPE, whose parser reads anything without "no"/"not" as yes). The results
file counts such samples in `errors`, and a number with errors should not be reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lyrics.eval.benchmarks import BenchmarkSpec, EvalSample
from lyrics.eval.metrics import (
    MMERow,
    cider,
    evalai_clean_answer,
    score_exact_match,
    score_grounding,
    score_mme,
    score_multiple_choice,
    score_pope,
    score_vqa,
)

PRIMARY = {
    "cider": "CIDEr",
    "vqa_accuracy": "vqa_accuracy",
    "exact_match": "exact_match",
    "multiple_choice": "accuracy",
    "rec_accuracy": "acc@0.5",
    "pope": "accuracy",
    "mme": "perception",
}


def _pct(value: float) -> float:
    return round(100.0 * value, 4)


def score_predictions(
    spec: BenchmarkSpec,
    samples: Sequence[EvalSample],
    predictions: Mapping[str, str],
    coordinate_format: str = "int1000",
    mme_pairing: str = "lines",
) -> dict[str, float | None]:
    """Metrics of one split; `predictions` maps every sample id to its generated text.

    Returns a flat dict whose `primary` entry is the headline number (see `PRIMARY`). `mme_pairing`
    is how MME's acc+ pairs questions (`lyrics.eval.yesno.score_mme_subtask`): consecutive lines of
    each subtask, as the official tool, or by image name.
    """
    missing = [s.sample_id for s in samples if s.sample_id not in predictions]
    if missing:
        raise ValueError(f"{spec.title}: {len(missing)} samples have no prediction, e.g. {missing[:5]}")
    texts = [predictions[s.sample_id] for s in samples]
    metric = spec.metric
    out: dict[str, float]
    if metric == "cider":
        result = cider({s.sample_id: s.target["captions"] for s in samples}, dict(zip((s.sample_id for s in samples), texts)))
        out = {"CIDEr": round(100.0 * result.score, 4)}
    elif metric == "vqa_accuracy":
        annotations = [
            {"question_id": s.sample_id, "answers": s.target["answers"], "answer_type": s.target.get("answer_type")} for s in samples
        ]
        preds = {s.sample_id: t for s, t in zip(samples, texts)}
        cleaned = score_vqa(annotations, preds, clean_predictions=True)
        raw = score_vqa(annotations, preds)
        out = {"vqa_accuracy": cleaned.overall, "vqa_accuracy_raw": raw.overall}
        out |= {f"vqa_accuracy[{k}]": v for k, v in sorted(cleaned.per_answer_type.items())}
    elif metric == "exact_match":
        score = score_exact_match({s.sample_id: t for s, t in zip(samples, texts)}, {s.sample_id: s.target["answers"] for s in samples})
        out = {"exact_match": _pct(score)}
    elif metric == "multiple_choice":
        mc = score_multiple_choice(texts, [s.target["choices"] for s in samples], [s.target["answer_index"] for s in samples])
        out = {"accuracy": _pct(mc.accuracy), "unparsed": _pct(mc.unparsed_rate)}
    elif metric == "rec_accuracy":
        rec = score_grounding(texts, [s.target["box"] for s in samples], coordinate_format)
        out = {"acc@0.5": _pct(rec.accuracy), "no_box": _pct(rec.parse_failure_rate), "mean_iou": round(rec.mean_iou, 6)}
    elif metric == "pope":
        pope = score_pope([s.target["label"] for s in samples], texts)
        out = {k: _pct(getattr(pope, k)) for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")}
    elif metric == "mme":
        mme = score_mme(mme_rows(samples, texts), pairing=mme_pairing, allow_partial=True)
        out = {group: round(value, 4) for group in ("perception", "cognition") if (value := getattr(mme, group)) is not None}
        if mme.total is not None:
            out["total"] = round(mme.total, 4)
        out |= {f"score[{name}]": round(r.score, 4) for name, r in mme.subtasks.items()}
        out["other"] = sum(r.other for r in mme.subtasks.values())  # answers read as neither yes nor no
        single = out[f"score[{next(iter(mme.subtasks))}]"] if len(mme.subtasks) == 1 else None
        # The headline: perception, else cognition, else the one subtask scored; None for a partial
        # set (--limit), which is never summed.
        return {"primary": out.get("perception", out.get("cognition", single)), **out}
    else:
        raise ValueError(f"{spec.title}: unknown metric {metric!r}")
    return {"primary": out[PRIMARY[metric]], **out}


def mme_rows(samples: Sequence[EvalSample], texts: Sequence[str]) -> dict[str, list[MMERow]]:
    """`{subtask: rows}` in sample order, i.e. the order of the official question files (which is
    what pairs the lines of acc+)."""
    rows: dict[str, list[MMERow]] = {}
    for s, text in zip(samples, texts):
        t = s.target
        rows.setdefault(t["subtask"], []).append(MMERow(t["image"], s.slots["question"], t["answer"], text))
    return rows


def submission(spec: BenchmarkSpec, samples: Sequence[EvalSample], predictions: Mapping[str, str]) -> list[dict[str, Any]]:
    """The official submission file of an unscored split: `[{"question_id", "answer"}]` (VQAv2 and
    TextVQA servers; VizWiz names the image in `image`), answers cleaned with the EvalAI processor."""
    key = "image" if spec.name == "vizwiz" else "question_id"
    rows = []
    for s in samples:
        qid: Any = int(s.sample_id) if s.sample_id.isdigit() and key == "question_id" else s.sample_id
        rows.append({key: qid, "answer": evalai_clean_answer(predictions.get(s.sample_id, ""))})
    return rows
