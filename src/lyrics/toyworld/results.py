"""Evaluate a quickstart checkpoint on the toy world's test and zero-shot splits, beside trivial
baselines scored by the same official scorers:

* captioning CIDEr            vs the most common training caption for every image
* VQA accuracy, by question type  vs the majority training answer per question type
* POPE accuracy, F1 and share of "yes", per sampling and for the held-out paraphrases  vs always "yes"
* REC Acc@0.5                 vs the centre box (0.25, 0.25, 0.75, 0.75)
* referential dialogue (test split): naming accuracy of the object in a given region, and Acc@0.5 of
  the answer's box (all turns; "next to" turns alone)  vs the most common answer per kind of
  question, boxed with the question's region (`toyworld/referential.py`)
* stage 1 on the val split: image-text retrieval R@1 / R@5 and ITM accuracy on hard negatives
  (`lyrics.eval.retrieval`)  vs chance

Predictions go through `lyrics eval`'s runner (`run_eval`) with the checkpoint's `LyricsPredictor`
reading the quickstart's refiner store; `results.json` maps "split/task/metric" to
`{"value": v, "baseline": b}`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# (benchmark, data folder, split, image root) per evaluation split of the toy world
def _benchmarks(world: Path, split: str) -> list[tuple[str, str, Path, str, Path]]:
    subtype = f"toy{split}"
    rec_data = world / ("refcoco_zeroshot" if split == "zeroshot" else "")
    rows = [
        ("captioning", "coco-captions", world, subtype, world / "images"),
        ("vqa", "vqav2", world / "vqav2", subtype, world / "images"),
        ("rec", "refcoco", rec_data, "test", world / "images"),
    ]
    samplings = ("random", "popular", "adversarial", "paraphrase")  # paraphrase: held-out wordings (toyworld/pope.py)
    rows += [(f"pope_{s}", "pope", world / "pope" / split, s, world / "images" / subtype) for s in samplings]
    return rows


RETRIEVAL_METRICS = ("i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5", "itm_accuracy")


def evaluate_stage1(quickstart, stage1: Path) -> dict[str, dict[str, float]]:
    """`val/retrieval/<metric>` of a stage-1 checkpoint, each `{"value": v, "baseline": chance}`."""
    from lyrics.eval.retrieval import evaluate_stage1 as score

    world = quickstart.world
    scores = score(
        stage1, world / "annotations" / "captions_toyval.json", world / "images" / "toyval",
        refiner_store=quickstart.store_dir, image_features=quickstart.features_dir,
    )  # fmt: skip
    return {f"val/retrieval/{k}": {"value": scores[k]["value"], "baseline": scores[k]["chance"]} for k in RETRIEVAL_METRICS if k in scores}


def evaluate_quickstart(
    quickstart,
    checkpoint: Path,
    splits: tuple[str, ...] = ("test", "zeroshot"),
    out_name: str = "results.json",
    stage1: Path | None = None,
) -> dict[str, dict[str, float]]:
    """Score `checkpoint` (and, given `stage1`, the stage-1 checkpoint's retrieval) and write
    `OUT/results.json`; returns the same mapping."""
    from lyrics.atomic import atomic_write_text
    from lyrics.eval.predictor import LyricsPredictor
    from lyrics.eval.runner import EvalConfig, run_eval

    out = quickstart.out
    # The runner hands over `eval_batch` prompts at a time; generation runs them 32 at a time, sorted by length.
    model = LyricsPredictor.from_pretrained(checkpoint, refiner_store=quickstart.store_dir, autocast=quickstart.autocast, max_batch=32, share_prefix=True)
    model.store_key = quickstart.keys
    predictor = RepeatedPrompts(model)
    budget = quickstart.budget
    results: dict[str, dict[str, float]] = {}
    details: dict[str, Any] = {}
    eval_dir = out / "eval" / checkpoint.parent.name
    if stage1 is not None:
        results.update(evaluate_stage1(quickstart, stage1))
    for split in splits:
        for task, benchmark, data, bench_split, images in _benchmarks(quickstart.world, split):
            config = EvalConfig(
                benchmark=benchmark, data=data, split=bench_split, images=images, limit=budget.eval_limit,
                batch_size=budget.eval_batch, out=eval_dir / split, model=str(checkpoint),
            )  # fmt: skip
            outcome = run_eval(predictor, config)
            baseline = baseline_metrics(quickstart.world, benchmark, config, predictor.coordinate_format)
            details[f"{split}/{task}"] = {"run_dir": str(outcome.run_dir), "metrics": outcome.results["metrics"], "baseline": baseline}
            for name, value in select_metrics(task, outcome.results["metrics"]).items():
                results[f"{split}/{task}/{name}"] = {"value": value, "baseline": select_metrics(task, baseline)[name]}
            if task == "vqa":
                by_type, base_by_type = vqa_by_question_type(outcome.run_dir, config, quickstart.world)
                for qtype, value in by_type.items():
                    results[f"{split}/vqa/{qtype}"] = {"value": value, "baseline": base_by_type[qtype]}
        if split == "test":
            from lyrics.toyworld.referential import evaluate_referential

            scores, base = evaluate_referential(model, quickstart.world, split, budget.eval_limit, eval_dir / split / "referential")
            details[f"{split}/referential"] = {"metrics": scores, "baseline": base}
            results.update({f"{split}/referential/{k}": {"value": v, "baseline": base[k]} for k, v in scores.items()})
    atomic_write_text(out / out_name, json.dumps(results, indent=2))
    atomic_write_text(out / "eval" / f"{checkpoint.parent.name}-details.json", json.dumps(details, indent=2))
    return results


class RepeatedPrompts:
    """A predictor that answers each distinct prompt once per run: POPE's three samplings ask the
    same positive questions about the same images (a third of their prompts), and greedy decoding
    gives one answer to one prompt."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.coordinate_format = predictor.coordinate_format
        self.answers: dict[str, Any] = {}

    @staticmethod
    def key(prompt) -> str:
        return json.dumps([prompt.turns, [str(i) for i in prompt.images], prompt.max_new_tokens, list(prompt.stop)])

    def predict(self, prompts):
        keys = [self.key(p) for p in prompts]
        todo = {k: p for k, p in zip(keys, prompts) if k not in self.answers}
        if todo:
            self.answers.update(zip(todo, self.predictor.predict(list(todo.values()))))
        return [self.answers[k] for k in keys]


def select_metrics(task: str, metrics: dict[str, float]) -> dict[str, float]:
    """The numbers the quickstart reports per task (percentages, CIDEr x 100)."""
    if task == "captioning":
        return {"CIDEr": metrics["CIDEr"]}
    if task == "vqa":
        return {"accuracy": metrics["vqa_accuracy"]}
    if task == "rec":
        return {"Acc@0.5": metrics["acc@0.5"]}
    return {"F1": metrics["f1"], "accuracy": metrics["accuracy"], "yes_ratio": metrics["yes_ratio"]}


def _train_answers(world: Path) -> list[dict[str, Any]]:
    return json.loads((world / "vqav2" / "v2_mscoco_toytrain_annotations.json").read_text())["annotations"]


def baseline_metrics(world: Path, benchmark: str, config, fmt: str) -> dict[str, float]:
    """Trivial-baseline predictions for the same samples, scored by the same scorer."""
    from lyrics.eval.baselines import CENTRE_BOX, MajorityAnswer, box_predictions, most_common_caption, vqa_training_pairs
    from lyrics.eval.benchmarks import apply_limit, get_benchmark, load_samples
    from lyrics.eval.scoring import score_predictions

    spec = get_benchmark(benchmark)
    samples = apply_limit(load_samples(spec, config.data, config.split, config.images), config.limit)
    if spec.metric == "cider":
        captions = json.loads((world / "annotations" / "captions_toytrain.json").read_text())["annotations"]
        constant = most_common_caption(a["caption"] for a in captions)
        texts = [constant] * len(samples)
    elif spec.metric == "vqa_accuracy":
        majority = MajorityAnswer.fit(vqa_training_pairs(_train_answers(world)))
        texts = [majority.predict(s.target.get("question_type")) for s in samples]
    elif spec.metric == "rec_accuracy":
        texts = box_predictions(len(samples), CENTRE_BOX, fmt)
    else:
        texts = ["yes"] * len(samples)
    return score_predictions(spec, samples, {s.sample_id: t for s, t in zip(samples, texts)}, fmt)


def vqa_by_question_type(run_dir: Path, config, world: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Official VQA accuracy per toy question type (colour, count, existence, position, ...), for the
    model and for the majority baseline."""
    from lyrics.eval.baselines import MajorityAnswer, vqa_training_pairs
    from lyrics.eval.benchmarks import apply_limit, get_benchmark, load_samples
    from lyrics.eval.runner import read_predictions
    from lyrics.eval.vqa import score_vqa

    spec = get_benchmark("vqav2")
    samples = apply_limit(load_samples(spec, config.data, config.split, config.images), config.limit)
    predictions: dict[str, Any] = {}
    for path in sorted(run_dir.glob("predictions.seed0.*.jsonl")):
        predictions.update(read_predictions(path))
    annotations = [
        {"question_id": s.sample_id, "answers": s.target["answers"], "question_type": s.target.get("question_type")}
        for s in samples
    ]
    model = score_vqa(annotations, {s.sample_id: predictions[s.sample_id]["prediction"] or "" for s in samples}, clean_predictions=True)
    majority = MajorityAnswer.fit(vqa_training_pairs(_train_answers(world)))
    base = score_vqa(annotations, {a["question_id"]: majority.predict(a["question_type"]) for a in annotations}, clean_predictions=True)
    return dict(model.per_question_type), dict(base.per_question_type)


def print_run(console, result, out: Path) -> None:
    """`lyrics quickstart`'s closing summary: the results table, stage times, where the files are,
    the chat with the model, and the command to chat with it yourself."""
    console.print(results_table(result.results))
    console.print("stages: " + ", ".join(f"{k} {v:.0f}s" for k, v in result.timings.items() if k != "total"))
    console.print(f"[bold]wall time: {result.timings['total']:.0f} s[/]   results: {out / 'results.json'}   report: {out / 'report.html'}")
    chat = json.loads((out / "chat.json").read_text())
    image = out / "world" / chat["image"]
    console.print(f"\n[bold]A chat with the model[/] about {image} (picture of the last answer: {out / 'chat.png'}):")
    for exchange in result.exchanges:
        console.print(f"  [bold]you:[/] {exchange.question}\n  [bold]lyrics:[/] {exchange.answer}   [dim](true: {exchange.truth})[/]", highlight=False)
    console.print(f"\nchat with it yourself: lyrics chat --model {result.checkpoint} --image {image} --save-vis answer.png", markup=False)


def results_table(results: dict[str, dict[str, float]], title: str = "Lyrics quickstart (toy world)"):
    """A rich table: metric, value, baseline, difference."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("metric", "Lyrics", "baseline", "difference"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, entry in results.items():
        diff = entry["value"] - entry["baseline"]
        colour = "green" if diff > 0 else "red" if diff < 0 else "white"
        table.add_row(name, f"{entry['value']:.2f}", f"{entry['baseline']:.2f}", f"[{colour}]{diff:+.2f}")
    return table
