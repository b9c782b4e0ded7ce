import json

from typer.testing import CliRunner

from lyrics.cli import app


def test_toyworld_command_generates_reuses_and_refuses(tmp_path):
    runner = CliRunner()
    out = tmp_path / "world"
    args = ["toyworld", str(out), "--seed", "2", "--train", "5", "--val", "3", "--test", "3", "--zeroshot", "3"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "train" in first.output and (out / "world.json").is_file()
    manifest = json.loads((out / "world.json").read_text())
    assert manifest["sizes"] == {"train": 5, "val": 3, "test": 3, "zeroshot": 3} and manifest["seed"] == 2
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and (out / "world.json").read_text() == json.dumps(manifest)
    refused = runner.invoke(app, ["toyworld", str(out), "--seed", "9", "--train", "5"])
    assert refused.exit_code == 2 and "different toy world" in refused.output
