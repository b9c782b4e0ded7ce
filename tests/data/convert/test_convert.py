import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from data.layouts import write_refcoco, write_vqav2
from lyrics.cli import app
from lyrics.data.convert import KINDS, convert
from lyrics.data.records import load_records

runner = CliRunner()


def test_every_kind_is_a_converter():
    assert set(KINDS) >= {"coco-captions", "vqav2", "okvqa", "aokvqa", "aokvqa-mc", "gqa", "textvqa", "ocrvqa",
                          "scienceqa", "refcoco", "shikra-rd", "alpaca"}


def test_cli_convert_writes_valid_records(tmp_path):
    files = write_refcoco(tmp_path)
    out = tmp_path / "out" / "refcoco.json"
    result = runner.invoke(app, ["convert", "refcoco", str(files["folder"]), "--images", str(files["images"]),
                                 "--out", str(out), "--split", "train", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    records = load_records(out)
    assert {r.task for r in records} == {"rec", "grounded_captioning"}
    assert all("<box:0>" in "".join(t["value"] for t in r.conversations) for r in records)


def test_cli_coordinate_format_renders_literal_boxes(tmp_path):
    files = write_refcoco(tmp_path)
    out = tmp_path / "gc.json"
    result = runner.invoke(app, ["convert", "refcoco-gc", str(files["folder"]), "--out", str(out), "--split", "val",
                                 "--coordinate-format", "unit3"])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())[0]
    assert record["conversations"][0]["value"].endswith(" <Bbox>(0.600,0.125),(0.900,0.500)</Box>")
    assert record["meta"]["coordinate_format"] == "unit3"


def test_cli_errors_are_clear_and_leave_no_output(tmp_path):
    out = tmp_path / "out.json"
    out.write_text("previous")
    result = runner.invoke(app, ["convert", "vqav2", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 2 and "missing" in result.output and "questions.json" in result.output
    bad = runner.invoke(app, ["convert", "nope", str(tmp_path), "--out", str(out)])
    assert bad.exit_code == 2 and "unknown kind 'nope'" in bad.output
    split = runner.invoke(app, ["convert", "alpaca", str(tmp_path), "--out", str(out), "--split", "train"])
    assert split.exit_code == 2 and "no split" in split.output
    assert out.read_text() == "previous"  # a failed run never touches an existing output


def test_cli_subprocess_round_trip(tmp_path):
    files = write_vqav2(tmp_path, "toytrain")
    out = tmp_path / "vqa.jsonl"
    proc = subprocess.run([sys.executable, "-m", "lyrics", "convert", "vqav2", str(files["questions"]), str(files["annotations"]),
                           "--images", str(tmp_path), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(load_records(out)) == 3


def test_convert_rejects_bad_options(tmp_path):
    with pytest.raises(ValueError, match="coordinate format"):
        convert("alpaca", [tmp_path], coordinate_format="pixels")
    with pytest.raises(FileNotFoundError, match="input not found"):
        convert("alpaca", [tmp_path / "none.json"])
