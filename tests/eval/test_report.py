"""The leaderboard: result files -> Markdown beside the paper's numbers, and `lyrics eval --report`."""

import json

import pytest
from evalkit import ScriptedPredictor, write_benchmark
from typer.testing import CliRunner

from lyrics.cli import app
from lyrics.eval.report import collect_results, leaderboard, paper_tables
from lyrics.eval.runner import EvalConfig, run_eval


@pytest.fixture
def results_dir(tmp_path):
    out = tmp_path / "eval_results"
    data, _, _ = write_benchmark("pope", tmp_path / "pope")
    run_eval(ScriptedPredictor({"1": "Yes", "2": "No"}), EvalConfig("pope", data, split="random", out=out, model="/ckpts/toy-lyrics"))
    run_eval(ScriptedPredictor({"1": "Yes", "2": "Yes"}), EvalConfig("pope", data, split="popular", out=out, model="/ckpts/toy-lyrics"))
    data, _, _ = write_benchmark("vqav2", tmp_path / "vqa")
    answers = {"420": "red", "421": "1", "70": "no"}
    run_eval(ScriptedPredictor(answers), EvalConfig("vqav2", data, split="toyval", out=out, model="/ckpts/toy-lyrics"))
    data, _, _ = write_benchmark("scienceqa-img", tmp_path / "sqa")
    for shots in (0, 1):
        run_eval(ScriptedPredictor({"1": "red"}), EvalConfig("scienceqa-img", data, shots=shots, seeds=[0, 1], out=out, model="/ckpts/toy-lyrics"))
    return out


def test_paper_tables_are_transcribed():
    tables = {t["id"]: t for t in paper_tables()["tables"]}
    lyrics = {t: next(r["values"] for r in tables[t]["rows"] if r["model"].startswith("Lyrics")) for t in tables}
    assert lyrics["table1"] == [121.1, 126.8, 85.4, 81.2, 58.2, 62.4, 71.1, 37.6]
    assert lyrics["table2"] == [69.4, 75.8]
    assert lyrics["table3"] == [90.69, 92.08, 86.03, 82.89, 89.77, 76.72, 87.23, 88.26, 86.71]
    assert lyrics["table9"] == [88.3, 89.8, 93.4, 1537.37, 431.06, 91.25, 87.33, 83.55]
    for table in tables.values():
        assert all(len(row["values"]) == len(table["columns"]) for row in table["rows"])


def test_leaderboard_puts_our_numbers_beside_the_paper(results_dir):
    results = collect_results([results_dir])
    assert len(results) == 5
    text = leaderboard(results)
    assert "| Lyrics | 88.3 | 89.8 | 93.4 | 1537.37 | 431.06 | 91.25 | 87.33 | 83.55 |" in text
    # POPE random: both right (100), popular: "Yes" to the "no" question (50); LLaVA-Bench, MME not run
    assert "| **ours: toy-lyrics** | - | - | - | - | - | 100.00 | 50.00 | - |" in text
    # VQAv2 only on the toy split: shown with a dagger (another split than the paper's column)
    assert "66.7†" in text
    assert "| **ours: toy-lyrics** | - | - | - | 66.7† | - | - | 100.0 | - |" in text
    # REC table has no row of ours (nothing was run)
    table3 = text.split("## Table 3")[1].split("## ")[0]
    assert "ours" not in table3
    # few-shot table and the prompt notes
    assert "| toy-lyrics | scienceqa-img | test | 100.00 | 100.00 ± 0.00 |" in text
    assert "`<Image>Question: {Question} Options: {Option}. Answer:`" in text
    assert "| pope | random | 0 | toy-lyrics | 100.00 | 2 | vqa[0] `<Image>{Question}`" in text


def test_report_command_writes_markdown(results_dir, tmp_path):
    out = tmp_path / "board.md"
    result = CliRunner().invoke(app, ["eval", "--report", str(results_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("# Lyrics evaluation leaderboard")


def test_report_refuses_foreign_json(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"accuracy": 1}))
    result = CliRunner().invoke(app, ["eval", "--report", str(tmp_path)])
    assert result.exit_code == 2 and "not a `lyrics eval` results file" in result.output


def test_eval_command_needs_its_flags():
    result = CliRunner().invoke(app, ["eval", "--benchmark", "pope"])
    assert result.exit_code == 2 and "needs --model, --benchmark and --data" in result.output
    listing = CliRunner().invoke(app, ["eval", "--list"])
    assert listing.exit_code == 0 and "coco_pope_random.json" in listing.output and "refcocog/refs(umd).p" in listing.output
