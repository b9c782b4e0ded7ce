"""`lyrics ablate`: the paper's Table 4 at toy scale, with equal budgets and seeds.

Rows (each trains its own stage 1 and stage 2 on the same world, stand-ins, refiner store and
features, with the same step counts and seeds, then is scored on the test split):

* `full`                     - the quickstart model;
* `no_grounding_queries`     - stage 1 and 2 without grounding queries (visual queries do both parts);
* `no_spatial_representation`- stage 1 without the spatial text (the caption plays its part, no MSP);
* `no_pretraining`           - stage 2 starts from an untrained MQ-Former;
* `spatial_text_switch`      - the refiner's spatial text in the LLM prompt flipped (NOTES section 7).

The table prints each row's metrics and its difference from `full`, beside the paper's Table 4
differences (on GQA, SciQA-Img, VizWiz, TextVQA and RefCOCOg): what this measures is reported as it
comes out, in either direction.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def run_ablation(out: str | Path, budget: Budget, rows: list[str] | None = None, seed: int = 0, log=print) -> dict[str, dict[str, Any]]:
    """Run every row (reusing finished ones) and write `OUT/ablation.json`."""
    from lyrics.data.io import atomic_write_text
    from lyrics.presets import _merge
    from lyrics.toyworld.results import evaluate_quickstart

    out = Path(out)
    rows = rows or list(ROWS)
    base = Quickstart(out, budget, seed=seed, log=log)
    base.prepare()
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        overrides, pretrain = row_overrides(row, base.model)
        run = Quickstart(out / "ablate" / row, budget, seed=seed, model=_merge(base.model, overrides, ""), log=log, shared=out)
        run.standins, run.manifest, run.keys = base.standins, base.manifest, base.keys
        stage1 = run.timed(f"{row}: stage1", run.stage_stage1) if pretrain else None
        checkpoint = run.timed(f"{row}: stage2", lambda: run.stage_stage2(stage1))
        results = run.timed(f"{row}: evaluate", lambda: evaluate_quickstart(run, checkpoint, splits=("test",)))
        table[row] = {name: results[key]["value"] for name, key in SUMMARY.items() if key in results}
    summary = {"budget": {"stage1_steps": budget.stage1_steps, "stage2_steps": budget.stage2_steps, "seed": seed}, "rows": table}
    atomic_write_text(out / "ablation.json", json.dumps(summary, indent=2))
    return table


def ablation_table(table: dict[str, dict[str, Any]]):
    from rich.table import Table

    metrics = list(SUMMARY)
    out = Table(title="Table 4 at toy scale (test split; difference from `full` in brackets)")
    out.add_column("row")
    for name in metrics:
        out.add_column(name, justify="right")
    out.add_column("paper Table 4 differences (GQA/SciQA/VizWiz/TextVQA/RefCOCOg val/test)")
    full = table.get("full", {})
    for row, values in table.items():
        cells = []
        for name in metrics:
            value = values.get(name)
            if value is None:
                cells.append("-")
            elif row == "full" or name not in full:
                cells.append(f"{value:.2f}")
            else:
                cells.append(f"{value:.2f} ({value - full[name]:+.2f})")
        out.add_row(ROWS.get(row, row), *cells, PAPER_DELTAS.get(row, ""))
    return out

