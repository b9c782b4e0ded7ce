"""`lyrics ablate`: the paper's Table 4 at toy scale, with equal budgets, over one or more seeds.

Rows (each trains its own stage 1 and stage 2 on the same world, stand-ins, refiner store and
features, with the same step counts and seed, then is scored on the test split):

* `full`                     - the quickstart model;
* `no_grounding_queries`     - stage 1 and 2 without grounding queries (visual queries do both parts);
* `no_spatial_representation`- stage 1 without the spatial text (the caption plays its part, no MSP);
* `no_pretraining`           - stage 2 starts from an untrained MQ-Former;
* `spatial_text_switch`      - the refiner's spatial text in the LLM prompt flipped (docs/design.md, "Ambiguities in the paper and the reading we take").

Every seed has its own world, stand-ins, refiner store and features (the world depends on the seed),
so each seed runs in its own folder (`seed_folder`): `OUT` itself where it holds that seed's world (a
`lyrics quickstart --out OUT` run) or holds no world yet and the seed is the first one, else
`OUT/seed{S}`. A row's runs are `FOLDER/ablate/ROW`.

The table prints each row's mean ± sample standard deviation over the seeds and its difference from
`full`, beside the paper's Table 4 differences (on GQA, SciQA-Img, VizWiz, TextVQA and RefCOCOg):
what this measures is reported as it comes out, in either direction. A difference is marked as
standing outside the seed-to-seed spread when it exceeds twice its standard error (`SPREAD_RULE`).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable

from lyrics.toyworld.quickstart import Budget, Quickstart

ROWS: dict[str, str] = {
    "full": "the quickstart model",
    "no_grounding_queries": "w/o grounding queries",
    "no_spatial_representation": "w/o spatial representation",
    "no_pretraining": "w/o pre-training stage",
    "spatial_text_switch": "spatial text in LLM prompt flipped",
}

# Table 4 of the paper: the drop of each ablation (GQA, SciQA-Img, VizWiz, TextVQA, RefCOCOg val / test).
PAPER_DELTAS: dict[str, str] = {
    "no_grounding_queries": "-4.3 / -6.8 / -3.2 / -8.3 / -4.13 / -5.22",
    "no_spatial_representation": "-5.3 / -7.4 / -2.7 / -6.2 / -4.57 / -4.31",
    "no_pretraining": "-24.1 / -42.9 / -22.7 / -40.1 / -55.68 / -52.00",
    "spatial_text_switch": "(not in the paper)",
}

# The headline numbers compared across rows.
SUMMARY = {
    "VQA": "test/vqa/accuracy",
    "colour VQA": "test/vqa/color",
    "POPE F1 (adversarial)": "test/pope_adversarial/F1",
    "REC Acc@0.5": "test/rec/Acc@0.5",
    "CIDEr": "test/captioning/CIDEr",
}

SPREAD_RULE = "|mean_row - mean_full| > 2 * sqrt(std_row^2/n_row + std_full^2/n_full)"

# Written into a row's folder once it is scored; a rerun with the same seed, budget, model and
# checkpoint files reuses its numbers without training or evaluating again.
ROW_RESULT = "ablation-row.json"


def row_overrides(row: str, model: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(model overrides for both stages, whether stage 1 runs) of an ablation row."""
    if row == "no_grounding_queries":
        return {"mqformer_config": {"num_grounding_query_tokens": 0}}, True
    if row == "no_spatial_representation":
        return {"use_spatial_text": False}, True
    if row == "no_pretraining":
        return {}, False
    if row == "spatial_text_switch":
        return {"spatial_text_in_prompt": not model.get("spatial_text_in_prompt", False)}, True
    if row == "full":
        return {}, True
    raise ValueError(f"unknown ablation row {row!r}; choose from {sorted(ROWS)}")


def seed_folder(out: str | Path, seed: int, first: bool) -> Path:
    """The folder of one seed's shared stages and rows: `out` where it holds this seed's world (a
    quickstart run, or an earlier ablation), or holds no world yet and `seed` is the first seed asked
    for; else `out/seed{seed}`. One seed into a fresh or quickstart folder thus keeps the quickstart's
    `--out` layout (rows in `out/ablate/ROW`)."""
    out = Path(out)
    manifest = out / "world" / "world.json"
    if manifest.is_file():
        try:
            world_seed = json.loads(manifest.read_text()).get("seed")
        except (json.JSONDecodeError, AttributeError):
            world_seed = None
        return out if world_seed == seed else out / f"seed{seed}"
    if first and not (out / "world").exists():
        return out
    return out / f"seed{seed}"


def _fingerprint(checkpoint: Path) -> list[list[Any]]:
    """(name, size, mtime) of the files in a checkpoint folder: changes whenever it is written again."""
    if not checkpoint.is_dir():
        return []
    return sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in checkpoint.iterdir() if p.is_file())


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _finished(row_dir: Path, key: dict[str, Any]) -> dict[str, float] | None:
    """The metrics of a finished row run with this seed, budget and model, None where there is none."""
    path = row_dir / ROW_RESULT
    if not path.is_file():
        return None
    try:
        done = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if any(done.get(k) != v for k, v in key.items()):
        return None
    checkpoint = Path(done.get("checkpoint", ""))
    if not done.get("fingerprint") or _fingerprint(checkpoint) != done["fingerprint"]:
        return None
    return done.get("metrics")


def run_ablation(
    out: str | Path,
    budget: Budget,
    rows: list[str] | None = None,
    seeds: Iterable[int] = (0,),
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Run every row for every seed (reusing finished runs) and write `OUT/ablation.json`.

    Each seed runs its shared stages in its own folder (`seed_folder`), then trains and scores each
    row there. Returns `summarize`'s row -> metric -> statistics mapping (`rows` in the JSON file).
    """
    from lyrics.atomic import atomic_write_text
    from lyrics.presets import merge
    from lyrics.toyworld.results import evaluate_quickstart

    out = Path(out)
    rows = list(rows or ROWS)
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    for row in rows:
        row_overrides(row, {})  # an unknown row fails before any stage runs
    folders = {seed: seed_folder(out, seed, first=i == 0) for i, seed in enumerate(seeds)}
    values: dict[str, dict[str, dict[str, float]]] = {row: {} for row in rows}
    for seed in seeds:
        folder = folders[seed]
        log(f"ablate: seed {seed} in {folder}")
        base = Quickstart(folder, budget, seed=seed, log=log, llm_dir=out / "llm")  # one converted LLM for every seed
        prepared: dict[str, Any] | None = None  # what `prepare` set on `base`, given to every row
        for row in rows:
            overrides, pretrain = row_overrides(row, base.model)
            run = Quickstart(folder / "ablate" / row, budget, seed=seed, model=merge(base.model, overrides), log=log, shared=folder)
            key = _plain({"seed": seed, "budget": asdict(budget), "model": run.model})
            metrics = _finished(run.out, key)
            if metrics is not None:
                log(f"ablate: seed {seed} {row}: reusing {run.out / ROW_RESULT}")
            else:
                if prepared is None:
                    before = set(vars(base))
                    base.prepare()
                    # the shared stages' outputs (manifest, keys, stand-ins, and whatever else
                    # `prepare` sets, such as the LLM's folder): every row trains on the same ones
                    prepared = {k: v for k, v in vars(base).items() if k not in before}
                for name, value in prepared.items():
                    setattr(run, name, value)
                stage1 = run.timed(f"{row}: stage1", run.stage_stage1) if pretrain else None
                checkpoint = Path(run.timed(f"{row}: stage2", lambda: run.stage_stage2(stage1)))
                results = run.timed(f"{row}: evaluate", lambda: evaluate_quickstart(run, checkpoint, splits=("test",)))
                metrics = {name: results[k]["value"] for name, k in SUMMARY.items() if k in results}
                done = {**key, "checkpoint": str(checkpoint), "fingerprint": _fingerprint(checkpoint), "metrics": metrics}
                atomic_write_text(run.out / ROW_RESULT, json.dumps(done, indent=2))
            for name, value in metrics.items():
                values[row].setdefault(name, {})[str(seed)] = float(value)
    table = summarize(values)
    summary = {
        "budget": {"stage1_steps": budget.stage1_steps, "stage2_steps": budget.stage2_steps, "seed": seeds[0]},
        "seeds": seeds,
        "folders": {str(s): str(f.resolve()) for s, f in folders.items()},
        "spread_rule": SPREAD_RULE,
        "rows": table,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "ablation.json", json.dumps(summary, indent=2))
    return table


def summarize(values: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """row -> metric -> {seed: value} to row -> metric -> statistics:

    * `values`: the per-seed values ({"0": ..., "1": ...});
    * `n`, `mean`, `std`: the sample standard deviation (ddof=1), None with fewer than 2 seeds;
    * `diff`: mean minus `full`'s mean (None where `full` lacks the metric);
    * `outside_spread`: whether `diff` stands outside the seed-to-seed spread (`SPREAD_RULE`:
      |mean_row - mean_full| > 2 * sqrt(std_row^2/n_row + std_full^2/n_full)); None for `full` itself
      and where either side has fewer than 2 seeds.
    """
    stats: dict[str, dict[str, dict[str, Any]]] = {}
    for row, metrics in values.items():
        stats[row] = {}
        for name, per_seed in metrics.items():
            points = list(per_seed.values())
            stats[row][name] = {
                "values": dict(per_seed),
                "n": len(points),
                "mean": statistics.fmean(points),
                "std": statistics.stdev(points) if len(points) >= 2 else None,
            }
    full = stats.get("full", {})
    for row, metrics in stats.items():
        for name, cell in metrics.items():
            ref = full.get(name)
            cell["diff"] = None if ref is None else cell["mean"] - ref["mean"]
            cell["outside_spread"] = None
            if ref is not None and row != "full" and cell["std"] is not None and ref["std"] is not None:
                cell["outside_spread"] = stands_out(cell["mean"], cell["std"], cell["n"], ref["mean"], ref["std"], ref["n"])
    return stats


def stands_out(mean: float, std: float, n: int, full_mean: float, full_std: float, full_n: int) -> bool:
    """Whether a row's difference from `full` stands outside the seed-to-seed spread:
    |mean - full_mean| > 2 * sqrt(std^2/n + full_std^2/full_n) (twice the difference's standard error)."""
    return abs(mean - full_mean) > 2 * math.sqrt(std**2 / n + full_std**2 / full_n)


def ablation_table(table: dict[str, dict[str, Any]]):
    """A rich Table of `run_ablation`'s rows: per metric `mean ± std` over the seeds and, in brackets,
    the difference from `full`'s mean, beside the paper's Table 4 differences (`PAPER_DELTAS`).

    A difference marked `*` stands outside the seed-to-seed spread:
    |mean_row - mean_full| > 2 * sqrt(std_row^2/n + std_full^2/n) (`SPREAD_RULE`). With one seed there is
    no std and no mark. Plain numbers (row -> metric -> value) are read as one seed's values.
    """
    from rich.table import Table

    if any(isinstance(cell, (int, float)) for metrics in table.values() for cell in metrics.values()):
        table = summarize({row: {name: {"0": float(v)} for name, v in metrics.items() if v is not None} for row, metrics in table.items()})
    metrics = list(SUMMARY)
    seeds = max((cell["n"] for cells in table.values() for cell in cells.values()), default=1)
    if seeds >= 2:
        title = f"Table 4 at toy scale (test split, {seeds} seeds: mean ± std; difference from `full` in brackets)"
        caption = f"* the difference stands outside the seed-to-seed spread: {SPREAD_RULE}"
    else:
        title = "Table 4 at toy scale (test split, one seed; difference from `full` in brackets)"
        caption = "one seed: no spread measured, so no difference is marked (--seeds 2 or more measures it)"
    out = Table(title=title, caption=caption)
    out.add_column("row")
    for name in metrics:
        out.add_column(name, justify="right")
    out.add_column("paper Table 4 differences (GQA/SciQA/VizWiz/TextVQA/RefCOCOg val/test)")
    for row, cells in table.items():
        out.add_row(ROWS.get(row, row), *(_cell(cells.get(name), row) for name in metrics), PAPER_DELTAS.get(row, ""))
    return out


def _cell(cell: dict[str, Any] | None, row: str) -> str:
    if cell is None:
        return "-"
    text = f"{cell['mean']:.2f}" if cell["std"] is None else f"{cell['mean']:.2f} ± {cell['std']:.2f}"
    if row != "full" and cell.get("diff") is not None:
        text += f" ({cell['diff']:+.2f}{'*' if cell.get('outside_spread') else ''})"
    return text
