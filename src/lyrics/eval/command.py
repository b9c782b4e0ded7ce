"""What `lyrics eval` does (the typer function in `lyrics.cli` only parses flags and calls these).

    lyrics eval --model CKPT --benchmark vqav2 --data /data/vqav2 --images /data/coco [--split val2014]
    lyrics eval ... --shots 4 --seeds 0,1,2,3,4            # in-context few-shot, averaged over seeds
    lyrics eval ... --shard 0/4                            # one of 4 machines; the last one scores
    lyrics eval --report eval_results --out leaderboard.md # Markdown beside the paper's tables
    lyrics eval --list                                     # benchmarks, splits and expected files
    lyrics eval --model STAGE1 --benchmark retrieval --data annotations/captions_val2017.json \
        --images val2017 --refiner-store store --vision-model CLIP   # stage 1: R@k and ITM
    lyrics eval ... --benchmark llava-bench --judge-url https://api.openai.com/v1 --judge-model gpt-4-0314
    lyrics eval --endpoint http://127.0.0.1:8000/v1 --model final --benchmark pope --data /data/pope \
        --images /data/coco --concurrency 8                 # a served model (lyrics serve, vLLM)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lyrics.eval.benchmarks import BENCHMARKS, BenchmarkSpec, expand_splits, get_benchmark
from lyrics.distributed import parse_shard
from lyrics.eval.predictor import Predictor
from lyrics.eval.runner import EvalConfig, EvalOutcome, run_eval


def parse_seeds(values: Sequence[str] | None) -> list[int] | None:
    """`["0,1", "2"]` -> `[0, 1, 2]` (repeatable and comma-separated)."""
    if not values:
        return None
    seeds = []
    for value in values:
        for part in str(value).replace(" ", ",").split(","):
            if part:
                try:
                    seeds.append(int(part))
                except ValueError:
                    raise ValueError(f"--seeds takes integers, got {part!r}") from None
    return seeds


def benchmark_listing() -> list[tuple[str, str, str, str, str]]:
    """(name, splits, metric, template, expected files of the default split) per benchmark."""
    from lyrics.data.templates import default_bank

    rows = []
    for spec in BENCHMARKS.values():
        template = default_bank().get(spec.task, spec.default_template)
        splits = ", ".join(s + (" (unscored)" if not spec.scored(s) else "") for s in spec.splits)
        rows.append((spec.name, splits, spec.metric, f"{spec.task}[{template.index}] {template.text}", "; ".join(spec.expected_files())))
    return rows


def benchmark_listing_text() -> str:
    """`lyrics eval --list`: one block per benchmark."""
    blocks = [f"{n}\n  splits: {s}\n  metric: {m}\n  template: {t}\n  files: {f}" for n, s, m, t, f in benchmark_listing()]
    return "\n".join(blocks)


def run_benchmark(
    model: Path | None,
    benchmark: str,
    data: Path,
    *,
    images: Path | None = None,
    split: str | None = None,
    limit: int | None = None,
    shots: int = 0,
    seeds: Sequence[str] | None = None,
    shard: str = "0/1",
    batch_size: int = 8,
    out: Path | None = None,
    refiner_store: Path | None = None,
    template: int | None = None,
    max_new_tokens: int | None = None,
    max_length: int | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    console: Any = None,
    refiner: dict[str, Any] | None = None,
    mme_pairing: str = "lines",
    judge: dict[str, Any] | None = None,
    share_prefix: bool = False,
    zero_grounding: bool = False,
    endpoint: dict[str, Any] | None = None,
    quantize: str = "none",
) -> list[EvalOutcome]:
    """Evaluate a checkpoint on every requested split of a benchmark; prints progress and tables.
    The live refiner is the checkpoint's own; `refiner` holds explicit fields (`--refiner`).

    `zero_grounding` scores the model with its grounding queries' output zeroed (`LyricsPredictor`);
    its runs are recorded under the model name `<checkpoint> (zero-grounding)`, so that they neither
    resume from nor mix with the full model's predictions in one `--out`, and `--report` shows them
    as their own row beside the full model. A `quantize`d model ("int8", "nf4") is likewise
    recorded as `<checkpoint> (int8)`: its answers are never merged with the unquantised model's.

    `endpoint` (`lyrics eval --endpoint`): `EndpointConfig` fields (`url`, `api_key`, `concurrency`,
    ...; `transport`: an httpx transport, for tests) of a served model to score instead of a
    checkpoint; `model` is then the served model's name (None: the endpoint's only model). The
    options of a local checkpoint (refiner store and fields, device, dtype, prompt length, shared
    prefix, zero grounding, quantisation) are refused with it: the server decides those."""
    from lyrics.eval.predictor import LyricsPredictor

    options = dict(
        images=images, split=split, limit=limit, shots=shots, seeds=seeds, shard=shard, batch_size=batch_size, out=out,
        template=template, max_new_tokens=max_new_tokens, mme_pairing=mme_pairing, judge=judge,
    )  # fmt: skip
    if endpoint is not None:
        local = dict(refiner_store=refiner_store, refiner=refiner or None, max_length=max_length, dtype=dtype,
                     device=None if device == "cpu" else device, share_prefix=share_prefix or None, zero_grounding=zero_grounding or None,
                     quantize=None if quantize == "none" else quantize)  # fmt: skip
        given = [f"--{k.replace('_', '-')}" for k, v in local.items() if v is not None]
        if given:
            raise ValueError(f"--endpoint scores a served model: {', '.join(given)} apply to a local checkpoint (the server runs its own refiner and settings)")
        return run_endpoint(endpoint, benchmark, data, model=model, console=console, **options)
    model_name = str(Path(model).resolve()) + (" (zero-grounding)" if zero_grounding else "") + (f" ({quantize})" if quantize != "none" else "")
    spec, configs = _plan(benchmark, data, model_name, **options)
    roots = [p for p in (images, data) if p is not None]
    predictor = LyricsPredictor.from_pretrained(
        model, device, dtype, refiner_store, store_roots=roots, max_length=max_length, refiner=refiner, share_prefix=share_prefix,
        zero_grounding=zero_grounding, quantize=quantize,
    )  # fmt: skip
    return _run(predictor, spec, configs, console)


def run_endpoint(endpoint: dict[str, Any], benchmark: str, data: Path, *, model: Path | str | None = None, console: Any = None, **options: Any) -> list[EvalOutcome]:
    """Score the model served at `endpoint` (`EndpointConfig` fields, `transport` optional) on every
    requested split; `options` are `run_benchmark`'s run options (images, split, limit, shots, ...).

    The run's model is the endpoint's model URL (`EndpointPredictor.identity`), so a resumed run
    against another endpoint or model, or a local checkpoint's run, is refused, never mixed. A batch
    (one append to the predictions file) is at least `concurrency` prompts, so that many can be in
    flight."""
    from lyrics.eval.endpoint import EndpointConfig, EndpointPredictor

    if benchmark == "retrieval":
        raise ValueError("--benchmark retrieval scores a stage-1 checkpoint's embeddings, not answers: give --model CKPT without --endpoint")
    fields = dict(endpoint)
    transport = fields.pop("transport", None)
    name = None if model is None else str(model)
    config = EndpointConfig(model=name, **fields)
    spec, configs = _plan(benchmark, data, "", **options)
    local = model is not None and (Path(model) / "config.json").is_file()
    with EndpointPredictor(config, transport=transport, local_checkpoint=local) as predictor:
        for run in configs:
            run.model, run.batch_size = predictor.identity, max(run.batch_size, config.concurrency)
        return _run(predictor, spec, configs, console)


def _plan(benchmark: str, data: Path, model_name: str, *, split: str | None, seeds: Sequence[str] | None, shard: str,
          out: Path | None, judge: dict[str, Any] | None, **fields: Any) -> tuple[BenchmarkSpec, list[EvalConfig]]:  # fmt: skip
    """The benchmark's spec and one `EvalConfig` per requested split, after checking that every
    split's annotation files exist (before minutes go into loading a model)."""
    from lyrics.data.official.common import find_files

    spec = get_benchmark(benchmark)
    judge_config = judge_from_options(spec.metric, judge or {})
    configs = [
        EvalConfig(benchmark=spec.name, data=data, split=s, seeds=parse_seeds(seeds), shard=parse_shard(shard),
                   out=out or Path("eval_results"), model=model_name, judge=judge_config, **fields)  # fmt: skip
        for s in expand_splits(spec, split)
    ]
    for config in configs:
        find_files(data, spec.files(config.split, spec.scored(config.split)), f"{spec.title} ({config.split} split)")
    return spec, configs


def _run(predictor: Predictor, spec: BenchmarkSpec, configs: Sequence[EvalConfig], console: Any) -> list[EvalOutcome]:
    """Run every split's config with `predictor`, printing progress, counts and result tables."""
    from rich.console import Console

    from lyrics.eval.report import results_table

    console = console or Console()
    outcomes = []
    for config in configs:

        def progress(done: int, total: int, seed: int, name: str = f"{spec.title} {config.split}") -> None:
            console.print(f"{name} seed {seed}: {done}/{total}", highlight=False)

        def judged(done: int, total: int, name: str = f"{spec.title} {config.split}") -> None:
            console.print(f"{name} judge: {done}/{total}", highlight=False)

        outcome = run_eval(predictor, config, progress, judged)
        outcomes.append(outcome)
        console.print(f"{outcome.run_dir}: {outcome.computed} predicted, {outcome.reused} already done", highlight=False)
        if outcome.results is not None:
            console.print(results_table(outcome.results))
            console.print(f"results: {outcome.run_dir / 'results.json'}", highlight=False)
        else:
            console.print("waiting for the other shards: " + "; ".join(outcome.pending), highlight=False)
    return outcomes


def run_retrieval(
    model: Path,
    data: Path,
    *,
    images: Path | None = None,
    split: str | None = None,
    limit: int | None = None,
    refiner_store: Path | None = None,
    vision_model: Path | None = None,
    out: Path | None = None,
    console: Any = None,
) -> dict[str, dict[str, float]]:
    """Score a stage-1 checkpoint's image-text retrieval and ITM (`lyrics.eval.retrieval`) on a
    COCO-format caption file (`data`, or `data/annotations/captions_{split}.json`); writes
    `OUT/retrieval-NAME/results.json` and prints the metrics beside chance."""
    import json

    from rich.console import Console
    from rich.table import Table

    from lyrics.atomic import atomic_write_text
    from lyrics.eval.retrieval import evaluate_stage1

    console = console or Console()
    captions = Path(data)
    if captions.is_dir():
        if split is None:
            raise ValueError(f"--data {data} is a folder: give --split S to read annotations/captions_S.json, or the file itself")
        captions = captions / "annotations" / f"captions_{split}.json"
    if not captions.is_file():
        raise FileNotFoundError(f"retrieval: caption file {captions} does not exist (COCO format: images + annotations)")
    results = evaluate_stage1(model, captions, images or captions.parent, refiner_store=refiner_store, vision_model=vision_model, limit=limit)
    run_dir = (out or Path("eval_results")) / f"retrieval-{captions.stem}"
    run_dir.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "retrieval", "model": str(Path(model).resolve()), "captions": str(captions.resolve()), "metrics": results}
    atomic_write_text(run_dir / "results.json", json.dumps(payload, indent=2))
    table = Table(title=f"stage-1 retrieval and matching ({captions.name})")
    for column in ("metric", "value", "chance"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, entry in results.items():
        table.add_row(name, f"{entry['value']:.2f}", f"{entry['chance']:.2f}")
    console.print(table)
    console.print(f"results: {run_dir / 'results.json'}", highlight=False)
    return results


def judge_from_options(metric: str, options: dict[str, Any]):
    """A `JudgeConfig` from the `--judge-*` options (`url`, `model`, `key_env`, `timeout_s`,
    `retries`, `context`; None values = defaults), or None when neither URL nor model is given.
    Checked before the model loads: both are needed, only judged benchmarks take them, and a key
    variable named explicitly must be set (the default OPENAI_API_KEY may be unset: local judges)."""
    import os

    from lyrics.eval.judge import JudgeConfig

    given = {k: v for k, v in options.items() if v is not None}
    if not given.get("url") and not given.get("model"):
        return None
    if metric != "llava_judge":
        raise ValueError("--judge-url / --judge-model apply to judged benchmarks (llava-bench) only")
    key_env = given.get("key_env")
    if key_env is not None and not os.environ.get(key_env):
        raise ValueError(f"--judge-key-env {key_env}: that environment variable is not set")
    return JudgeConfig(**given)


def write_report(paths: Sequence[Path] | None, out: Path | None) -> str:
    """The Markdown leaderboard of the results under `paths` (default `eval_results/`); written to
    `out` atomically when given, returned either way."""
    from lyrics.atomic import atomic_write_text
    from lyrics.eval.report import collect_results, leaderboard

    results = collect_results(paths or [Path("eval_results")])
    if not results:
        raise FileNotFoundError(f"no results.json under {', '.join(str(p) for p in paths or ['eval_results'])}")
    text = leaderboard(results)
    if out is not None:
        atomic_write_text(out, text)
    return text
