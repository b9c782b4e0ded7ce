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
The same table goes to `OUT/ablate/table4.md` and, as bars per metric, `table4.png` (`table4.py`).

Finished rows are reused, so runs of another kind are never mixed in: a seed or row folder whose
`quickstart.json` (or a row's `ablation-row.json`) records another seed, budget or model is refused
with the field named, as `lyrics quickstart` refuses; a corrupt or partial result is rerun.
`ablation_status` (`lyrics ablate --status`) reads the same folders to say what is done, running or
left and about how long the rest takes, training nothing.

Length: the runner, its statistics and tables, and `--status`, which must read the folders exactly as
the runner writes them; past 450 lines for that reason.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

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
    # stage 1 alone (val split; none for the row without pre-training)
    "stage-1 t2i R@1": "val/retrieval/t2i_R@1",
    "stage-1 ITM accuracy": "val/retrieval/itm_accuracy",
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
    """The metrics of a finished row run with this seed, budget and model, None where there is none.

    A corrupt or partial result (not JSON, no metrics, a metric that is not a number, a checkpoint
    written again since) is None too: that row is scored again, never averaged in."""
    done = _read_json(row_dir / ROW_RESULT)
    if not isinstance(done, dict) or any(done.get(k) != v for k, v in key.items()):
        return None
    metrics = done.get("metrics")
    if not isinstance(metrics, dict) or not metrics or not all(_number(v) for v in metrics.values()):
        return None
    if not done.get("checkpoint") or not done.get("fingerprint") or _fingerprint(Path(str(done["checkpoint"]))) != done["fingerprint"]:
        return None
    return metrics


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Row(NamedTuple):
    """One (seed, row) run: its name, its Quickstart (out = `FOLDER/ablate/ROW`), the key its result
    must carry to be reused (seed, budget, model) and whether stage 1 runs."""

    name: str
    run: Quickstart
    key: dict[str, Any]
    pretrain: bool


def _plan(
    out: Path,
    budget: Budget,
    rows: list[str] | None,
    seeds: Iterable[int],
    log: Callable[[str], None],
    refused: dict[tuple[int, str], str] | None = None,
) -> list[tuple[Quickstart, list[_Row]]]:
    """Per seed: the Quickstart of its shared stages (in `seed_folder`) and its rows' runs, checked
    before anything runs: an unknown row, repeated seeds, or a folder holding another run fail here.
    Given `refused`, a folder holding another run is recorded there ((seed, row) -> message) instead."""
    from lyrics.presets import merge

    rows = list(rows or ROWS)
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    for row in rows:
        row_overrides(row, {})  # an unknown row fails before any stage runs
    plan = []
    for i, seed in enumerate(seeds):
        folder = seed_folder(out, seed, first=i == 0)
        base = Quickstart(folder, budget, seed=seed, log=log, llm_dir=out / "llm")  # one converted LLM for every seed
        seed_refusal = _refusal(lambda: base.check_previous(_seed_record(base)), refused is None)
        runs = []
        for row in rows:
            overrides, pretrain = row_overrides(row, base.model)
            run = Quickstart(folder / "ablate" / row, budget, seed=seed, model=merge(base.model, overrides), log=log, shared=folder)
            key = _plain({"seed": seed, "budget": asdict(budget), "model": run.model})
            refusal = seed_refusal or _refusal(lambda: _refuse_other_run(run, key), refused is None)
            if refused is not None and refusal:
                refused[(seed, row)] = refusal
            runs.append(_Row(row, run, key, pretrain))
        plan.append((base, runs))
    return plan


def _refusal(check: Callable[[], None], raise_it: bool) -> str:
    """The message of the ValueError `check` raises ("" where none), raised again if `raise_it`."""
    try:
        check()
    except ValueError as exc:
        if raise_it:
            raise
        return str(exc)
    return ""


def _seed_record(base: Quickstart) -> dict[str, Any]:
    """What a seed folder's `quickstart.json` must say for its shared stages to be reused: the same
    fields `lyrics quickstart` records and checks (budget, seed, model)."""
    return _plain({"budget": asdict(base.budget), "seed": base.seed, "model": base.model})


def _refuse_other_run(run: Quickstart, key: dict[str, Any]) -> None:
    """Refuse a row folder that holds a run with another seed, budget or model: its stages would be
    resumed or reused (`stage_stage2` returns an existing `final/`) and scored under this key.

    The record is the row's `quickstart.json` (written when the row starts, checked by
    `Quickstart.check_previous`), else the key of an `ablation-row.json` written before there was one.
    Unreadable records are not refusals: a corrupt result is rerun (`_finished`)."""
    run.check_previous(key)
    path = run.out / ROW_RESULT
    done = _read_json(path)
    if isinstance(done, dict):
        for name, value in key.items():
            if name in done and done[name] != value:
                raise ValueError(f"{run.out} holds an ablation row run with a different {name} ({path}); choose another --out or delete that folder")


def _read_json(path: Path) -> Any:
    """The JSON in `path`, None where it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def run_ablation(
    out: str | Path,
    budget: Budget,
    rows: list[str] | None = None,
    seeds: Iterable[int] = (0,),
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Run every row for every seed (reusing finished runs) and write `OUT/ablation.json`, then the
    table as a picture and Markdown (`OUT/ablate/table4.png`, `table4.md`; `table4.write_table4`).

    Each seed runs its shared stages in its own folder (`seed_folder`), then trains and scores each
    row there. A folder holding a run with another budget, seed or model is refused before anything
    runs (`_plan`). Returns `summarize`'s row -> metric -> statistics mapping (`rows` in the JSON file).
    """
    from lyrics.atomic import atomic_write_text
    from lyrics.toyworld.results import evaluate_quickstart
    from lyrics.toyworld.table4 import write_table4

    out = Path(out)
    plan = _plan(out, budget, rows, seeds, log)
    values: dict[str, dict[str, dict[str, float]]] = {row.name: {} for row in plan[0][1]}
    for base, runs in plan:
        seed, folder = base.seed, base.out
        log(f"ablate: seed {seed} in {folder}")
        prepared: dict[str, Any] | None = None  # what `prepare` set on `base`, given to every row
        for row in runs:
            run, key = row.run, row.key
            metrics = _finished(run.out, key)
            if metrics is not None:
                log(f"ablate: seed {seed} {row.name}: reusing {run.out / ROW_RESULT}")
            else:
                if prepared is None:
                    if not (base.out / "quickstart.json").is_file():  # a later run with another budget is refused
                        atomic_write_text(base.out / "quickstart.json", json.dumps(_seed_record(base), indent=2))
                    before = set(vars(base))
                    base.prepare()
                    # the shared stages' outputs (manifest, keys, stand-ins, and whatever else
                    # `prepare` sets, such as the LLM's folder): every row trains on the same ones
                    prepared = {k: v for k, v in vars(base).items() if k not in before}
                for name, value in prepared.items():
                    setattr(run, name, value)
                atomic_write_text(run.out / "quickstart.json", json.dumps(key, indent=2))  # what `_refuse_other_run` reads
                stage1 = run.timed(f"{row.name}: stage1", run.stage_stage1) if row.pretrain else None
                checkpoint = Path(run.timed(f"{row.name}: stage2", lambda: run.stage_stage2(stage1)))
                results = run.timed(f"{row.name}: evaluate", lambda: evaluate_quickstart(run, checkpoint, splits=("test",), stage1=stage1))
                metrics = {name: results[k]["value"] for name, k in SUMMARY.items() if k in results}
                done = {**key, "checkpoint": str(checkpoint), "fingerprint": _fingerprint(checkpoint), "metrics": metrics}
                atomic_write_text(run.out / ROW_RESULT, json.dumps(done, indent=2))
            for name, value in metrics.items():
                values[row.name].setdefault(name, {})[str(seed)] = float(value)
    table = summarize(values)
    seed_list = [base.seed for base, _ in plan]
    summary = {
        "budget": {"stage1_steps": budget.stage1_steps, "stage2_steps": budget.stage2_steps, "seed": seed_list[0]},
        "seeds": seed_list,
        "folders": {str(base.seed): str(base.out) for base, _ in plan},
        "spread_rule": SPREAD_RULE,
        "rows": table,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "ablation.json", json.dumps(summary, indent=2))
    # after the JSON file, so a failing picture never loses the numbers (a rerun reuses every row)
    write_table4(table, out / "ablate", log=log)
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
        out.add_row(ROWS.get(row, row), *(cell_text(cells.get(name), row) for name in metrics), PAPER_DELTAS.get(row, ""))
    return out


def cell_text(cell: dict[str, Any] | None, row: str) -> str:
    """`mean ± std (diff*)` of one statistics cell (`summarize`), "-" where the row lacks the metric."""
    if cell is None:
        return "-"
    text = f"{cell['mean']:.2f}" if cell["std"] is None else f"{cell['mean']:.2f} ± {cell['std']:.2f}"
    if row != "full" and cell.get("diff") is not None:
        text += f" ({cell['diff']:+.2f}{'*' if cell.get('outside_spread') else ''})"
    return text


# --- `lyrics ablate --status` ---------------------------------------------------------------------

# The share of the quickstart's evaluation time (`EXPECTED_SECONDS[...]["evaluate"]`) a row's
# test-split-only evaluation takes (the quickstart also scores the zero-shot split).
TEST_EVAL_SHARE = 0.6
SHARED_STAGES = ("world", "standins", "refine", "features", "records")


def ablation_status(
    out: str | Path, budget: Budget, rows: list[str] | None = None, seeds: Iterable[int] = (0,)
) -> list[dict[str, Any]]:
    """Where each (seed, row) run of `run_ablation(out, budget, rows, seeds)` stands, read from its
    folders without training or writing anything. One dict per (seed, row), in run order:

    * `seed`, `row`, `folder` (the row's run folder);
    * `state`: "done" (a finished result `run_ablation` would reuse, `_finished`), "running" (begun
      and not finished: running now, or killed and resumed by the next run), "left", or "refused"
      (the folder holds a run with another seed, budget or model; `note` says which);
    * `stage`, `step`, `steps` of a running row: the stage it is in ("stage1", "stage2", "evaluate")
      and that stage's newest checkpoint step (where a resumed run restarts) of its step count;
    * `seconds`: the row's time left, `EXPECTED_SECONDS` of the run's precision scaled to the budget
      (`Quickstart.scale`): stage 1 (where it runs) + stage 2 + `TEST_EVAL_SHARE` of the evaluation,
      less the share of a running stage's steps done;
    * `shared_seconds`: on a seed's first row that is not done, the seed's shared stages where its
      world does not exist yet (and the LLM conversion where `OUT/llm` does not); else 0.
    """
    out = Path(out)
    refused: dict[tuple[int, str], str] = {}
    plan = _plan(out, budget, rows, seeds, log=lambda _: None, refused=refused)
    llm_missing = not (out / "llm").exists()
    status = []
    for base, runs in plan:
        shared_due = not (base.out / "world" / "world.json").is_file()
        for row in runs:
            entry: dict[str, Any] = {
                "seed": base.seed, "row": row.name, "folder": str(row.run.out), "state": "left",
                "stage": None, "step": None, "steps": None, "note": "", "seconds": 0.0, "shared_seconds": 0.0,
            }  # fmt: skip
            status.append(entry)
            if (base.seed, row.name) in refused:
                entry.update(state="refused", note=refused[(base.seed, row.name)])
                continue
            if _finished(row.run.out, row.key) is not None:
                entry["state"] = "done"
                continue
            stage, step = _progress(row.run.out, row.pretrain)
            if stage is not None:
                steps = {"stage1": budget.stage1_steps, "stage2": budget.stage2_steps}.get(stage)
                entry.update(state="running", stage=stage, step=step, steps=steps)
            entry["seconds"] = _seconds_left(row, stage, step)
            if shared_due:
                table = base.expected_seconds
                shared = sum(table[s] * base.scale(s) for s in SHARED_STAGES)
                entry["shared_seconds"] = shared + (table["llm"] if llm_missing else 0.0)
                shared_due = llm_missing = False
    return status


def _progress(row_dir: Path, pretrain: bool) -> tuple[str | None, int | None]:
    """(stage, newest checkpoint step) of a row run that has begun; (None, None) where none has."""
    stage2 = row_dir / "stage2"
    if (stage2 / "final" / "lyrics_model.safetensors").is_file():
        return "evaluate", None
    if _begun(stage2):
        return "stage2", _newest_step(stage2)
    stage1 = row_dir / "stage1"
    if pretrain and (stage1 / "final" / "model.safetensors").is_file():
        return "stage2", None
    if pretrain and _begun(stage1):
        return "stage1", _newest_step(stage1)
    return None, None


def _begun(stage_dir: Path) -> bool:
    return stage_dir.is_dir() and any(stage_dir.iterdir())


def _newest_step(stage_dir: Path) -> int | None:
    """The step of the newest `checkpoints/step-N` folder (the trainer's layout), None where none."""
    root = stage_dir / "checkpoints"
    steps = [int(m.group(1)) for p in root.iterdir() if p.is_dir() and (m := re.fullmatch(r"step-(\d+)", p.name))] if root.is_dir() else []
    return max(steps, default=None)


def _seconds_left(row: _Row, stage: str | None, step: int | None) -> float:
    """The row's stages from `stage` on (all where None), less the share of `stage`'s steps done."""
    run, budget = row.run, row.run.budget
    table = run.expected_seconds
    cost = {
        "stage1": table["stage1"] * run.scale("stage1") if row.pretrain else 0.0,
        "stage2": table["stage2"] * run.scale("stage2"),
        "evaluate": TEST_EVAL_SHARE * table["evaluate"] * run.scale("evaluate"),
    }
    order = list(cost)
    left = sum(cost[s] for s in order[order.index(stage) if stage else 0 :])
    steps = {"stage1": budget.stage1_steps, "stage2": budget.stage2_steps}
    if stage is not None and stage in steps and step:
        left -= cost[stage] * min(step / steps[stage], 1.0)
    return left


def status_seconds(status: list[dict[str, Any]]) -> float:
    """The estimated seconds left of an `ablation_status`."""
    return sum(entry["seconds"] + entry["shared_seconds"] for entry in status)


def status_table(status: list[dict[str, Any]]):
    """A rich Table of `ablation_status`: one line per (seed, row), the total time left in the caption."""
    from rich.table import Table

    counts = {state: sum(e["state"] == state for e in status) for state in ("done", "running", "left", "refused")}
    caption = (
        f"{counts['done']} done, {counts['running']} running, {counts['left']} left"
        + (f", {counts['refused']} refused" if counts["refused"] else "")
        + f"; about {_duration(status_seconds(status))} left (the default's measured stage times scaled to this budget, on 2 cores)"
    )
    out = Table(title="lyrics ablate: status", caption=caption)
    for name, justify in (("seed", "right"), ("row", "left"), ("state", "left"), ("stage", "left"), ("checkpoint step", "right"), ("time left", "right"), ("folder", "left")):
        out.add_column(name, justify=justify)  # type: ignore[arg-type]
    for e in status:
        step = "" if e["steps"] is None else f"{e['step'] or 0} / {e['steps']}"
        left = e["seconds"] + e["shared_seconds"]
        when = _duration(left) + (" (with shared stages)" if e["shared_seconds"] else "") if left else ""
        out.add_row(str(e["seed"]), e["row"], e["state"], e["stage"] or "", step, when, e["note"] or e["folder"])
    return out


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(round(seconds / 60))
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes} min"
