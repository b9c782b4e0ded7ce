"""Leaderboard: result files -> Markdown tables beside the paper's numbers (Tables 1, 2, 3, 9) and a
few-shot table (Figure 5); plus the rich table `lyrics eval` prints after a run.

The paper's rows live in `paper_tables.json` beside this module (transcribed, `null` where the paper
has "-"); each column names the benchmark, split and metric key of a `results.json` that fills it.
Our rows are one per model (zero-shot results only; few-shot ones go to the few-shot table). A
result on another split than the column's is shown with a dagger; when several results fill the
same cell the newest (by timestamp) wins. Every number printed is listed once more under "Prompts"
with its template, sample count and file, so it is always clear which prompt produced which number.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from lyrics.eval.runner import RESULTS_FORMAT

DAGGER = "†"


def paper_tables() -> dict[str, Any]:
    """The transcribed paper tables (see `paper_tables.json`)."""
    return json.loads(resources.files("lyrics.eval").joinpath("paper_tables.json").read_text(encoding="utf-8"))


def collect_results(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Every results file under `paths` (files, or folders searched for `results.json`); each
    result gets a `_path` entry. Files that are not Lyrics results are refused with their name."""
    files: list[Path] = []
    for entry in paths:
        entry = Path(entry)
        if entry.is_dir():
            files.extend(sorted(entry.rglob("results.json")))
        elif entry.is_file():
            files.append(entry)
        else:
            raise FileNotFoundError(f"{entry}: no such results file or folder")
    results = []
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
            raise ValueError(f"{path}: not a `lyrics eval` results file (format {RESULTS_FORMAT!r} expected)")
        results.append(dict(data, _path=str(path)))
    return results


def _model_name(result: dict[str, Any]) -> str:
    model = str(result.get("model") or "?")
    return Path(model).name or model


def _fmt(value: float | None, decimals: int) -> str:
    return "-" if value is None else f"{value:.{decimals}f}"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _pick(results: Sequence[dict[str, Any]], column: dict[str, Any], fallback: bool) -> tuple[dict[str, Any] | None, bool]:
    """The newest result for a column, preferring its exact split; another split only with
    `fallback` (no other column of the table shows this benchmark's metric). Returns (result,
    other_split)."""
    same = [r for r in results if r["benchmark"] == column["benchmark"] and r.get("metrics")]
    exact = [r for r in same if r["split"] == column["split"]]
    pool = exact or (same if fallback else [])
    if not pool:
        return None, False
    return max(pool, key=lambda r: r.get("timestamp", "")), not exact


def leaderboard(results: Sequence[dict[str, Any]], tables: dict[str, Any] | None = None) -> str:
    """Markdown: each paper table with our rows appended, the few-shot table, and the prompt notes."""
    tables = tables or paper_tables()
    zero = [r for r in results if not r.get("shots")]
    models = sorted({_model_name(r) for r in zero})
    used: dict[str, dict[str, Any]] = {}
    lines = ["# Lyrics evaluation leaderboard", "", f"Paper numbers: {tables['source']}", ""]
    for table in tables["tables"]:
        columns = table["columns"]
        lines += [f"## {table['title']}", "", _row(["Model", *(c["label"] for c in columns)]), _row(["---"] * (len(columns) + 1))]
        for row in table["rows"]:
            lines.append(_row([row["model"], *(_fmt(v, c.get("decimals", 1)) for v, c in zip(row["values"], columns))]))
        for model in models:
            mine = [r for r in zero if _model_name(r) == model]
            cells, values = [], []
            for column in columns:
                if column.get("average"):
                    cells.append(_fmt(sum(values) / len(values), column.get("decimals", 1)) if values and len(values) == len(columns) - 1 else "-")
                    continue
                if column.get("benchmark") is None:
                    cells.append("n/a")
                    continue
                # Another split may stand in only where no other column shows the same metric of
                # the same benchmark (POPE's three splits are three columns of one metric).
                fallback = sum((c.get("benchmark"), c.get("metric")) == (column["benchmark"], column["metric"]) for c in columns) == 1
                result, other = _pick(mine, column, fallback)
                value = None if result is None else result["metrics"].get(column["metric"])
                if value is None:
                    cells.append("-")
                    continue
                values.append(value)
                used[result["_path"]] = result
                cells.append(_fmt(value, column.get("decimals", 1)) + (f"{DAGGER}" if other else ""))
            if any(c not in ("-", "n/a") for c in cells):
                lines.append(_row([f"**ours: {model}**", *cells]))
        notes = [f"{c['label']}: {c['note']}" for c in columns if c.get("note")]
        lines += [""] + ([f"Notes: {'; '.join(notes)}.", ""] if notes else [])
    lines += [f"{DAGGER} our number is on another split than the paper's column (see Prompts).", ""]
    lines += _fewshot_section(results, used)
    lines += ["## Prompts", "", _row(["benchmark", "split", "shots", "model", "metric", "samples", "template", "file"]), _row(["---"] * 8)]
    for path, r in sorted(used.items(), key=lambda item: (item[1]["benchmark"], item[1]["split"], item[1].get("shots", 0))):
        template = r.get("template") or {}
        tag = f"{template.get('task')}[{template.get('index')}] `{template.get('text')}`"
        limit = f" (--limit {r['limit']})" if r.get("limit") else ""
        primary = r["metrics"].get("primary")
        lines.append(_row([r["benchmark"], r["split"], str(r.get("shots", 0)), _model_name(r), _fmt(primary, 2), f"{r['count']}{limit}", tag, path]))
    return "\n".join(lines) + "\n"


def _fewshot_section(results: Sequence[dict[str, Any]], used: dict[str, dict[str, Any]]) -> list[str]:
    """Figure 5: primary metric (mean ± std over seeds) per benchmark and number of shots."""
    scored = [r for r in results if r.get("metrics") and r.get("shots")]
    if not scored:
        return []
    base = [r for r in results if r.get("metrics") and not r.get("shots")]
    keys = sorted({(_model_name(r), r["benchmark"], r["split"]) for r in scored})
    shots = sorted({0} | {r["shots"] for r in scored})
    lines = ["## In-context few-shot (Figure 5; mean ± std over seeds)", "", _row(["model", "benchmark", "split", *(f"{k}-shot" for k in shots)])]
    lines.append(_row(["---"] * (3 + len(shots))))
    for model, benchmark, split in keys:
        cells = []
        for k in shots:
            group = [r for r in (scored if k else base) if (_model_name(r), r["benchmark"], r["split"]) == (model, benchmark, split) and r.get("shots", 0) == k]
            if not group:
                cells.append("-")
                continue
            r = max(group, key=lambda item: item.get("timestamp", ""))
            used[r["_path"]] = r
            std = (r.get("metrics_std") or {}).get("primary")
            cells.append(_fmt(r["metrics"]["primary"], 2) + (f" ± {std:.2f}" if std is not None else ""))
        lines.append(_row([model, benchmark, split, *cells]))
    return lines + [""]


def results_table(results: dict[str, Any]):
    """A rich `Table` of one results file (what `lyrics eval` prints after scoring)."""
    from rich.table import Table

    shots = results.get("shots") or 0
    template = results.get("template") or {}
    title = f"{results['title']} {results['split']} ({shots}-shot, {results['count']} samples, {results.get('errors', 0)} errors)"
    table = Table(title=title, caption=f"template {template.get('task')}[{template.get('index')}]: {template.get('text')}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    metrics = results.get("metrics")
    if metrics is None:
        table.add_row("(unscored split)", results.get("note", ""))
        return table
    std = results.get("metrics_std") or {}
    for name, value in metrics.items():
        if name == "primary":
            continue
        spread = std.get(name)
        table.add_row(name, _fmt(value, 2) + (f" ± {spread:.2f}" if spread is not None else ""))
    return table
