"""Run one benchmark split: sharded, resumable, batched; then score the union of the shards.

Output, under `OUT/<benchmark>-<split>-<K>shot/`:

    run.json                                  what the predictions depend on (model, template, ...)
    predictions.seed<S>.shard<i>of<n>.jsonl   one line per sample: id, prediction, error, prompt
    results.json                              metrics (mean and std over seeds), counts, template,
                                              model, benchmark, split, shots, seeds, timestamp
    submission.json                           unscored splits only: the official submission file
    mme_results/<subtask>.txt                 MME only: the official tool's input, one line per question
    answers.jsonl, reviews.jsonl              LLaVA-Bench only: the answers in LLaVA's layout, and the
                                              judge's reviews (resumable; `lyrics.eval.llava_bench`)

Restart and sharding:

* `--shard i/n` takes the samples at positions p with p % n == i of the split (after `--limit`), a
  deterministic split whatever the machine.
* Predictions are appended per batch in one write, flushed and fsync'ed, so a killed run loses at
  most the batch in flight; on restart the shard's own file is read, a torn last line is cut off
  (the file is rewritten atomically), and every sample already answered in ANY prediction file of
  the run directory is skipped, so nothing finished is computed again (also after changing n).
* When every sample of the split has a prediction for every seed, whichever shard finishes last
  scores the union and writes `results.json` (temp file + `os.replace`). A run directory holding
  predictions of another configuration (`run.json` differs) is refused instead of mixed.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lyrics.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from lyrics.data.templates import Template, default_bank
from lyrics.eval.benchmarks import (
    BenchmarkSpec,
    EvalSample,
    apply_limit,
    check_images,
    get_benchmark,
    load_samples,
)
from lyrics.eval.fewshot import DEFAULT_SEEDS, ExemplarPool, build_turns
from lyrics.eval.judge import JudgeConfig
from lyrics.eval.llava_bench import answer_rows, judge_answers, judged_metrics
from lyrics.eval.predictor import Predictor, Prompt
from lyrics.eval.scoring import mme_rows, score_predictions, submission
from lyrics.eval.yesno import MME_PAIRINGS, mme_result_lines

RESULTS_FORMAT = "lyrics-eval-results/1"


@dataclass
class EvalConfig:
    """One `lyrics eval` run of one split (see the CLI for the meaning of each flag)."""

    benchmark: str
    data: Path
    split: str | None = None
    images: Path | None = None
    limit: int | None = None
    shots: int = 0
    seeds: Sequence[int] | None = None
    shard: tuple[int, int] = (0, 1)
    batch_size: int = 8
    out: Path = Path("eval_results")
    template: int | None = None
    max_new_tokens: int | None = None
    model: str = ""
    mme_pairing: str = "lines"
    judge: JudgeConfig | None = None

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        self.images = Path(self.images) if self.images is not None else None
        rank, world = self.shard
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"--shard {rank}/{world}: need 0 <= i < n")
        if self.shots < 0:
            raise ValueError(f"--shots must be >= 0, got {self.shots}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds must be distinct, got {list(self.seeds)}")
        if self.mme_pairing not in MME_PAIRINGS:
            raise ValueError(f"--mme-pairing must be one of {', '.join(MME_PAIRINGS)}, got {self.mme_pairing!r}")


@dataclass
class EvalOutcome:
    """What a call did: the run directory, how many samples it computed and found done, and the
    results once every shard is complete (else `pending` says what is missing)."""

    run_dir: Path
    computed: int = 0
    reused: int = 0
    results: dict[str, Any] | None = None
    pending: list[str] = field(default_factory=list)


def choose_template(spec: BenchmarkSpec, index: int | None, sample: EvalSample) -> Template:
    """The fixed Table 10 template of the run; refuses one needing a slot the benchmark lacks."""
    bank = default_bank()
    template = bank.get(spec.task, spec.default_template if index is None else index)
    usable = [t.index for t in bank.templates(spec.task) if set(t.slots) <= set(sample.slots)]
    if not set(template.slots) <= set(sample.slots):
        raise ValueError(
            f"template {spec.task}[{template.index}] {template.text!r} needs {list(template.slots)}, but {spec.title} "
            f"samples provide {sorted(sample.slots) or 'no slot'}; usable --template values: {usable}"
        )
    return template


# ------------------------------------------------------------------------ prediction files
def read_predictions(path: Path, repair: bool = False) -> dict[str, dict[str, Any]]:
    """Records of a predictions file by sample id. A last line without its newline is a write cut
    short by a kill: it is ignored, and with `repair` cut off the file (atomic rewrite)."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    records: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records.setdefault(str(record["id"]), record)
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            raise ValueError(f"{path}:{number}: not a prediction record (the file is damaged; delete it to recompute)") from None
    if tail and repair:
        atomic_write_bytes(path, data[: len(data) - len(tail)])
    return records


def append_lines(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Append records as JSON lines in one write, then flush and fsync."""
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    with open(path, "ab") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def _seed_files(run_dir: Path, seed: int) -> list[Path]:
    return sorted(run_dir.glob(f"predictions.seed{seed}.shard*.jsonl"))


def _all_predictions(run_dir: Path, seed: int) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for path in _seed_files(run_dir, seed):
        for key, record in read_predictions(path).items():
            merged.setdefault(key, record)
    return merged


# ------------------------------------------------------------------------------ the run
def _check_identity(run_dir: Path, identity: dict[str, Any]) -> None:
    path = run_dir / "run.json"
    if path.is_file():
        existing = json.loads(path.read_text(encoding="utf-8"))
        differs = {k: (existing.get(k), v) for k, v in identity.items() if existing.get(k) != v}
        if differs:
            listed = "; ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in differs.items())
            raise ValueError(f"{run_dir} holds predictions of another configuration ({listed}); use another --out or delete it")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, identity)


def run_eval(predictor: Predictor, config: EvalConfig, progress: Any = None, judge_progress: Any = None) -> EvalOutcome:
    """Predict this shard's missing samples for every seed, then score if all shards are done.

    Args:
        predictor: any `Predictor` (a `LyricsPredictor`, or a scripted one in tests).
        config: the run.
        progress: optional callable `(done, total, seed)` called after each batch.
        judge_progress: optional callable `(reviewed, total)` called after each new judge review.
    """
    spec = get_benchmark(config.benchmark)
    split = config.split or spec.default_split
    if config.judge is not None and spec.metric != "llava_judge":
        raise ValueError(f"the judge options apply to judged benchmarks (llava-bench), not {spec.name}")
    all_samples = load_samples(spec, config.data, split, config.images)
    samples = apply_limit(all_samples, config.limit, whole_images=spec.metric == "mme")
    image_root = config.images or config.data
    check_images(samples, image_root, f"{spec.title} {split}")
    if spec.metric == "mme" and config.mme_pairing == "lines":
        _check_line_pairs(samples)
    template = choose_template(spec, config.template, samples[0])
    max_new_tokens = config.max_new_tokens or spec.max_new_tokens
    fmt = predictor.coordinate_format
    seeds = tuple(config.seeds) if config.shots and config.seeds else (DEFAULT_SEEDS if config.shots else (0,))

    pool = None
    if config.shots:
        pool_split = spec.fewshot_split.get(split)
        pool_samples = load_samples(spec, config.data, pool_split, config.images) if pool_split else all_samples
        pool = ExemplarPool(pool_samples, salt=f"{spec.name}/{split}")

    run_dir = config.out / f"{spec.name}-{split}-{config.shots}shot"
    identity = {
        "benchmark": spec.name, "split": split, "model": config.model, "shots": config.shots,
        "template": {"task": template.task, "index": template.index, "text": template.text},
        "max_new_tokens": max_new_tokens, "coordinate_format": fmt,
    }  # fmt: skip
    _check_identity(run_dir, identity)
    rank, world = config.shard
    mine = [s for position, s in enumerate(samples) if position % world == rank]
    outcome = EvalOutcome(run_dir)

    for seed in seeds:
        own = run_dir / f"predictions.seed{seed}.shard{rank}of{world}.jsonl"
        if own.exists():
            read_predictions(own, repair=True)
        done = _all_predictions(run_dir, seed)
        todo = [s for s in mine if s.sample_id not in done]
        outcome.reused += len(mine) - len(todo)
        exemplars = {s.sample_id: pool.draw(s, config.shots, seed) for s in todo} if pool is not None else {}
        if exemplars:
            check_images([e for chosen in exemplars.values() for e in chosen], image_root, f"{spec.title} few-shot exemplar")
        for start in range(0, len(todo), config.batch_size):
            batch = todo[start : start + config.batch_size]
            prompts = []
            for s in batch:
                shots = exemplars.get(s.sample_id, [])
                turns = build_turns(spec, template, s, shots, fmt)
                prompts.append(Prompt(turns, [e.image for e in shots] + [s.image], max_new_tokens, key=s.sample_id))
            answers = predictor.predict(prompts)
            if len(answers) != len(batch):
                raise RuntimeError(f"the predictor returned {len(answers)} answers for {len(batch)} prompts")
            lines = []
            for s, prompt, answer in zip(batch, prompts, answers):
                line = {"id": s.sample_id, "prediction": answer.text, "error": answer.error, "seed": seed, "prompt": prompt.turns[-1]["value"]}
                if config.shots:
                    line["exemplars"] = [e.sample_id for e in exemplars[s.sample_id]]
                lines.append(line)
            append_lines(own, lines)
            outcome.computed += len(batch)
            if progress is not None:
                progress(len(mine) - len(todo) + start + len(batch), len(mine), seed)

    outcome.results, outcome.pending = merge_and_score(spec, split, samples, seeds, run_dir, identity, config, fmt, judge_progress)
    return outcome


def _check_line_pairs(samples: Sequence[EvalSample]) -> None:
    """Before predicting: MME's acc+ pairs consecutive questions of a subtask, so each subtask
    needs an even number of them (the official tool stops on an odd one)."""
    counts: dict[str, int] = {}
    for s in samples:
        counts[s.target["subtask"]] = counts.get(s.target["subtask"], 0) + 1
    odd = {name: n for name, n in counts.items() if n % 2}
    if odd:
        raise ValueError(f"MME subtasks with an odd number of questions {odd}: acc+ pairs consecutive questions; use --mme-pairing image")


def _write_mme_results(run_dir: Path, name: str, samples: Sequence[EvalSample], texts: Sequence[str]) -> None:
    """The official tool's input: `<name>/<subtask>.txt`, one `image, question, gold, prediction`
    line per question in question-file order (so `calculation.py --results_dir` can check us)."""
    folder = run_dir / name
    folder.mkdir(exist_ok=True)
    for subtask, rows in mme_rows(samples, texts).items():
        atomic_write_text(folder / f"{subtask}.txt", mme_result_lines(rows))


def _mean_std(per_seed: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Mean and (several seeds) population std per metric; a metric that is None in any seed (an
    MME group sum over an incomplete set) stays None."""
    keys = per_seed[0]["metrics"].keys()
    values = {k: [r["metrics"][k] for r in per_seed] for k in keys}
    mean = {k: None if None in v else round(statistics.fmean(v), 4) for k, v in values.items()}
    std = {k: None if None in v else round(statistics.pstdev(v), 4) for k, v in values.items()} if len(per_seed) > 1 else None
    return mean, std


def _judged(run_dir: Path, name: str, samples, texts: dict[str, str], config: EvalConfig, progress: Any):
    """LLaVA-Bench: the answers in LLaVA's answer-file layout, then (with a judge) the reviews and
    the relative scores; None without a judge."""
    questions = [s.slots["question"] for s in samples]
    rows = answer_rows([s.target["question_id"] for s in samples], questions, [texts[s.sample_id] for s in samples], config.model)
    atomic_write_text(run_dir / f"answers{name}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    if config.judge is None:
        return None
    items = [dict(s.target, question=s.slots["question"], answer_id=s.sample_id) for s in samples]
    reviews = judge_answers(items, texts, config.judge, run_dir / f"reviews{name}.jsonl", progress=progress)
    return judged_metrics(reviews)


def merge_and_score(spec, split, samples, seeds, run_dir: Path, identity: dict, config: EvalConfig, fmt: str, judge_progress: Any = None):
    """Score the union of all shards' predictions if it covers every sample for every seed;
    returns `(results, [])`, or `(None, [what is missing])`."""
    per_seed_predictions = {}
    pending = []
    for seed in seeds:
        records = _all_predictions(run_dir, seed)
        missing = [s.sample_id for s in samples if s.sample_id not in records]
        if missing:
            pending.append(f"seed {seed}: {len(missing)} of {len(samples)} samples not predicted yet (e.g. {missing[:3]})")
        per_seed_predictions[seed] = records
    if pending:
        return None, pending

    judged = spec.metric == "llava_judge"
    scored = spec.scored(split) and (not judged or config.judge is not None)
    per_seed = []
    for seed in seeds:
        records = per_seed_predictions[seed]
        texts = {s.sample_id: records[s.sample_id]["prediction"] or "" for s in samples}
        errors = sum(1 for s in samples if records[s.sample_id].get("error"))
        if judged:
            metrics = _judged(run_dir, "" if len(seeds) == 1 else f".seed{seed}", samples, texts, config, judge_progress)
        else:
            metrics = score_predictions(spec, samples, texts, fmt, config.mme_pairing) if scored else None
        if spec.metric == "mme":
            _write_mme_results(run_dir, "mme_results" if len(seeds) == 1 else f"mme_results.seed{seed}", samples, [texts[s.sample_id] for s in samples])
        if not spec.scored(split) and not judged:
            name = "submission.json" if len(seeds) == 1 else f"submission.seed{seed}.json"
            atomic_write_json(run_dir / name, submission(spec, samples, texts), indent=None)
        per_seed.append({"seed": seed, "metrics": metrics, "count": len(samples), "errors": errors})

    mean = std = None
    if scored:
        mean, std = _mean_std(per_seed)
    results = {
        "format": RESULTS_FORMAT,
        "benchmark": spec.name,
        "title": spec.title,
        "split": split,
        "paper_split": spec.paper_split,
        "metric": spec.metric,
        "primary": None if mean is None else mean["primary"],
        "metrics": mean,
        "metrics_std": std,
        "per_seed": per_seed,
        "count": len(samples),
        "errors": max(r["errors"] for r in per_seed),
        "limit": config.limit,
        "shots": config.shots,
        "seeds": list(seeds) if config.shots else None,
        "model": identity["model"],
        "template": identity["template"],
        "max_new_tokens": identity["max_new_tokens"],
        "coordinate_format": fmt,
        "decoding": "greedy",
        "predictions": sorted(p.name for seed in seeds for p in _seed_files(run_dir, seed)),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if spec.metric == "mme":
        results["mme_pairing"] = config.mme_pairing
    if judged:
        results["judge"] = config.judge.record() if config.judge is not None else None
        if config.judge is None:
            results["note"] = "answers written (answers*.jsonl); rerun with --judge-url and --judge-model to score them"
    elif not spec.scored(split):
        results["note"] = "no public answers for this split: submit submission.json to the official evaluation server"
    atomic_write_json(run_dir / "results.json", results)
    return results, []
