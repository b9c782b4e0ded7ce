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


def test_toyworld_standins_summary_names_clip_and_the_tokenizer(tmp_path, monkeypatch):
    """`--standins` trains the CLIP stand-in and the MQ-Former tokenizer (no LLM); the summary names both."""
    import lyrics.toyworld.standins as standins
    from lyrics.toyworld.command import run_toyworld
    from lyrics.toyworld.standins import StandinPaths

    calls = []

    def fake_train_standins(world, out, fast=False, seed=0):
        calls.append((world, out, fast, seed))
        log = {"final_loss": 1.25, "loss": [2.0, 1.5, 1.25], "seconds": 0.5}
        return StandinPaths(clip=out / "clip", mqformer_tokenizer=out / "mqformer_tokenizer",
                            mqformer_token_ids={"vocab_size": 321}, logs={"clip": log})

    monkeypatch.setattr(standins, "train_standins", fake_train_standins)
    world, out = tmp_path / "world", tmp_path / "standins"
    lines = run_toyworld(world, seed=2, sizes=dict(train=5, val=3, test=3, zeroshot=3), fast=True, standins=out)
    assert calls == [(world, out, True, 2)]
    tail = lines[lines.index(next(line for line in lines if line.startswith("stand-ins in "))):]
    assert tail[1:] == [
        f"  clip: {out / 'clip'}, final loss 1.250 after 3 steps (0.5 s)",
        f"  mqformer tokenizer: {out / 'mqformer_tokenizer'} (vocab 321)",
    ]
