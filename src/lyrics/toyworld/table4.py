"""`lyrics ablate`'s table as files to keep beside `ablation.json`: `table4.md` and `table4.png`.

The Markdown has one line per ablation row: per headline metric (`ablate.SUMMARY`) the seed mean ±
sample std, the difference from `full` (marked `*` outside the seed-to-seed spread, `SPREAD_RULE`)
and the per-seed values, beside the paper's Table 4 differences. The picture has one panel per
metric: a bar per row at the seed mean, the std as error bars and each seed as a dot. The paper's
differences are on other benchmarks (GQA, SciQA-Img, VizWiz, TextVQA, RefCOCOg), so they are
written as text under the rows, never drawn as bars. A row without a metric (stage-1 retrieval for
the row without pre-training) shows "-" and no bar.

matplotlib is optional (the `toy` extra): without it the Markdown is still written and the log
says so, because this runs at the very end of a multi-hour ablation.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

from lyrics.toyworld.ablate import PAPER_DELTAS, ROWS, SPREAD_RULE, SUMMARY, cell_text

PAPER_BENCHMARKS = "GQA / SciQA-Img / VizWiz / TextVQA / RefCOCOg val / test"
# Labels short enough for a bar in a small panel.
SHORT = {
    "full": "full",
    "no_grounding_queries": "w/o GQ",
    "no_spatial_representation": "w/o spatial",
    "no_pretraining": "w/o pre-train",
    "spatial_text_switch": "prompt switch",
}

Summary = dict[str, dict[str, dict[str, Any]]]  # row -> metric -> `ablate.summarize` statistics


def write_table4(summary_rows: Summary, out_dir: str | Path, log: Callable[[str], None] = print) -> tuple[Path | None, Path]:
    """Write `out_dir/table4.md` and `out_dir/table4.png` of `summarize`'s statistics; returns
    (png, md), png None where matplotlib is not installed (logged, not raised)."""
    from lyrics.atomic import atomic_write_bytes, atomic_write_text

    out_dir = Path(out_dir)
    md = atomic_write_text(out_dir / "table4.md", markdown_table(summary_rows))
    try:
        png_bytes = plot_table4(summary_rows)
    except ImportError:
        log(f"ablate: {out_dir / 'table4.png'} needs matplotlib (pip install matplotlib); wrote {md} only")
        return None, md
    return atomic_write_bytes(out_dir / "table4.png", png_bytes), md


def seeds_of(summary_rows: Summary) -> list[str]:
    """Every seed with a value in the table, in numeric order."""
    seeds = {seed for cells in summary_rows.values() for cell in cells.values() for seed in cell["values"]}
    return sorted(seeds, key=lambda s: (not s.lstrip("-").isdigit(), int(s) if s.lstrip("-").isdigit() else 0, s))


def markdown_table(summary_rows: Summary) -> str:
    """The Markdown table with its caption line (seeds, what the numbers are, the spread rule)."""
    seeds = seeds_of(summary_rows)
    metrics = list(SUMMARY)
    lines = [
        "| row | " + " | ".join(metrics) + f" | paper Table 4 differences ({PAPER_BENCHMARKS}) |",
        "|---|" + "---:|" * len(metrics) + "---|",
    ]
    for row, cells in summary_rows.items():
        texts = [_md_cell(cells.get(name), row, seeds) for name in metrics]
        lines.append(f"| {ROWS.get(row, row)} | " + " | ".join(texts) + f" | {PAPER_DELTAS.get(row, '')} |")
    if len(seeds) >= 2:
        rule = f"`*`: the difference stands outside the seed-to-seed spread, `{SPREAD_RULE}`"
    else:
        rule = "one seed: no spread measured, so no difference is marked"
    caption = (
        f"Table 4 at toy scale, seeds {', '.join(seeds) or '-'} (n = {len(seeds)}): mean ± sample std over the seeds, "
        f"(difference from `full`), [per-seed values in seed order]; `-`: the row has no such metric. {rule}. "
        "The paper's differences are on its benchmarks, not these."
    )
    return "\n".join(lines) + "\n\n" + caption + "\n"


def _md_cell(cell: dict[str, Any] | None, row: str, seeds: list[str]) -> str:
    if cell is None:
        return "-"
    values = ", ".join(f"{cell['values'][s]:.2f}" if s in cell["values"] else "-" for s in seeds)
    return f"{cell_text(cell, row)} [{values}]"


def plot_table4(summary_rows: Summary) -> bytes:
    """The PNG bytes of the picture (raises ImportError without matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: the ablation runs on servers and in tests
    import matplotlib.pyplot as plt

    rows, metrics, seeds = list(summary_rows), list(SUMMARY), seeds_of(summary_rows)
    cols = 4
    grid = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(grid, cols, figsize=(4.2 * cols, 3.9 * grid), squeeze=False)
    labels = [SHORT.get(row, row) + _paper_note(row) for row in rows]
    for ax, name in zip(axes.flat, metrics):
        _panel(ax, name, [summary_rows[row].get(name) for row in rows], rows)
        ax.set_xticks(range(len(rows)), labels, fontsize=6.5)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    spread = "error bars: sample std, dots: seeds" if len(seeds) >= 2 else "one seed: no spread"
    fig.suptitle(f"Table 4 at toy scale: seed mean over seeds {', '.join(seeds)} ({spread}; * outside the seed-to-seed spread)", fontsize=10)
    fig.text(0.5, 0.005, f"paper: the paper's Table 4 differences from its full model on {PAPER_BENCHMARKS} (other benchmarks: text, not bars)", ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _panel(ax, name: str, cells: list[dict[str, Any] | None], rows: list[str]) -> None:
    """One metric: a bar per row with the metric (std error bars, seeds as dots), "-" for the rest."""
    ax.set_title(name, fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    top = max((max(c["values"].values(), default=c["mean"]) for c in cells if c is not None), default=1.0)
    for x, (row, cell) in enumerate(zip(rows, cells)):
        if cell is None:
            ax.text(x, 0, "-", ha="center", va="bottom", fontsize=10)
            continue
        ax.bar(x, cell["mean"], color="tab:blue" if row == "full" else "tab:gray", alpha=0.7, width=0.7)
        if cell["std"] is not None:
            ax.errorbar(x, cell["mean"], yerr=cell["std"], color="black", capsize=3, linewidth=1)
        points = list(cell["values"].values())
        offsets = [0.0] if len(points) == 1 else [-0.18 + 0.36 * i / (len(points) - 1) for i in range(len(points))]
        ax.scatter([x + o for o in offsets], points, s=10, color="black", zorder=3)
        if cell.get("outside_spread"):
            ax.text(x, max(points + [cell["mean"] + (cell["std"] or 0)]), "*", ha="center", va="bottom", fontsize=12)
    if all(c is None for c in cells):
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes, fontsize=8)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), max(top * 1.15, ax.get_ylim()[1]))


def _paper_note(row: str) -> str:
    """The paper's differences under a row's label, two numbers a line ("" for rows without)."""
    delta = PAPER_DELTAS.get(row)
    if not delta:
        return ""
    parts = [p.strip() for p in delta.split("/")]
    if len(parts) == 1:
        return "\npaper:\n" + delta.strip("()").replace(" the ", "\nthe ")
    return "\npaper:\n" + "\n".join("/".join(parts[i : i + 2]) for i in range(0, len(parts), 2))
