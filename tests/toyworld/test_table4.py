"""`table4.write_table4`: the Markdown table and the picture of `lyrics ablate`'s summary, from made-up
values over three seeds; a row without a metric; the Markdown alone where matplotlib is missing."""

import sys

import pytest
from PIL import Image

from lyrics.toyworld.ablate import PAPER_DELTAS, ROWS, SPREAD_RULE, SUMMARY, summarize
from lyrics.toyworld.table4 import markdown_table, write_table4

# full 42 ± 2, no_pretraining 31 ± 1 (-11, outside the spread), no_grounding_queries 41 ± 2 (-1, inside);
# the row without pre-training has no stage-1 retrieval.
VALUES = {
    "full": {"colour VQA": {"0": 40.0, "1": 42.0, "2": 44.0}, "stage-1 t2i R@1": {"0": 20.0, "1": 22.0, "2": 24.0}},
    "no_grounding_queries": {"colour VQA": {"0": 41.0, "1": 43.0, "2": 39.0}, "stage-1 t2i R@1": {"0": 18.0, "1": 19.0, "2": 20.0}},
    "no_pretraining": {"colour VQA": {"0": 30.0, "1": 31.0, "2": 32.0}},
}


@pytest.fixture
def stats():
    return summarize(VALUES)


def _line(md: str, row: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| {ROWS[row]} |"))


def test_the_markdown_has_each_row_with_mean_std_difference_and_seeds(stats):
    md = markdown_table(stats)
    assert md.splitlines()[0].count("|") == len(SUMMARY) + 3  # row, the metrics, the paper's column
    assert "42.00 ± 2.00 [40.00, 42.00, 44.00]" in _line(md, "full")
    assert "31.00 ± 1.00 (-11.00*) [30.00, 31.00, 32.00]" in _line(md, "no_pretraining")
    assert "41.00 ± 2.00 (-1.00) [41.00, 43.00, 39.00]" in _line(md, "no_grounding_queries")
    assert PAPER_DELTAS["no_pretraining"] in _line(md, "no_pretraining")
    # no stage-1 retrieval without pre-training: "-" in its column
    cells = [c.strip() for c in _line(md, "no_pretraining").strip("|").split("|")]
    assert cells[1 + list(SUMMARY).index("stage-1 t2i R@1")] == "-"
    caption = md.strip().splitlines()[-1]
    assert "seeds 0, 1, 2 (n = 3)" in caption and SPREAD_RULE in caption


def test_one_seed_marks_nothing():
    md = markdown_table(summarize({"full": {"VQA": {"0": 40.0}}, "no_pretraining": {"VQA": {"0": 30.0}}}))
    assert "30.00 (-10.00) [30.00]" in md and "*" not in md.replace("`*`", "") and "one seed" in md


def test_write_table4_writes_a_png_and_the_markdown(tmp_path, stats):
    png, md = write_table4(stats, tmp_path / "ablate", log=lambda _: None)
    assert md == tmp_path / "ablate" / "table4.md" and md.read_text() == markdown_table(stats)
    assert png == tmp_path / "ablate" / "table4.png" and png.stat().st_size > 0
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 0 and image.size[1] > 0
    assert sorted(p.name for p in (tmp_path / "ablate").iterdir()) == ["table4.md", "table4.png"]  # no temporary left


def test_without_matplotlib_only_the_markdown_is_written(tmp_path, stats, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    said = []
    png, md = write_table4(stats, tmp_path, log=said.append)
    assert png is None and md.is_file() and not (tmp_path / "table4.png").exists()
    assert len(said) == 1 and "matplotlib" in said[0]
