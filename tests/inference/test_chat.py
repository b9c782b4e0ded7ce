"""`lyrics chat`: one-shot (in-process CLI) and interactive multi-turn (a subprocess fed through stdin)."""

import os
import subprocess
import sys

from PIL import Image
from typer.testing import CliRunner

from inference.tinyckpt import with_refiner
from lyrics.cli import app
from lyrics.inference.chat import vis_path


def test_one_shot_prints_the_answer_and_saves_the_picture(checkpoint, pipe, scenes, tmp_path):
    scenes[2].save(tmp_path / "scene.png")
    expected = pipe(scenes[2], "what is the object <region>", regions=[(8, 8, 40, 40)], max_new_tokens=6)
    args = ["chat", "--model", str(checkpoint), "--image", str(tmp_path / "scene.png"), "--prompt", "what is the object",
            "--region", "8,8,40,40", "--max-new-tokens", "6", "--save-vis", str(tmp_path / "vis.png")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == expected.text, repr(result.stdout)
    assert f"picture saved to {tmp_path / 'vis.png'}" in result.stdout.replace("\n", "")
    assert Image.open(tmp_path / "vis.png").size == scenes[2].size
    missing = CliRunner().invoke(app, ["chat", "--model", str(checkpoint), "--image", str(tmp_path / "nope.png"), "--prompt", "hi"])
    assert missing.exit_code == 2 and "nope.png" in missing.output


def test_regions_in_normalised_units_and_a_refused_region(checkpoint, pipe, scenes, tmp_path):
    scenes[2].save(tmp_path / "scene.png")
    expected = pipe(scenes[2], "what is the object <region>?", regions=[(8, 8, 40, 40)], max_new_tokens=6)
    base = ["chat", "--model", str(checkpoint), "--image", str(tmp_path / "scene.png"), "--max-new-tokens", "6"]
    thousand = CliRunner().invoke(app, [*base, "--prompt", "what is the object <region>?", "--region", "83.3333,83.3333,416.6667,416.6667", "--region-format", "0-1000"])
    assert thousand.exit_code == 0, thousand.output
    assert thousand.stdout.splitlines()[0] == expected.text
    outside = CliRunner().invoke(app, [*base, "--prompt", "what is <region>?", "--region", "50,50,120,90"])
    assert outside.exit_code == 2 and "not inside the 96x96 image" in outside.output


def test_interactive_multi_turn_over_stdin(checkpoint, pipe, scenes, tmp_path):
    scenes[1].save(tmp_path / "scene.png")
    first = pipe(scenes[1], "what color is the circle?", max_new_tokens=6)
    second = pipe(scenes[1], "what is <region>?", history=first.conversation, regions=[(8, 8, 40, 40)], max_new_tokens=6)
    lines = ["what color is the circle?", "/region 8,8,40,40", "what is <region>?", "/region 1,2", "/reset", "what color is the circle?", "/quit"]
    command = [sys.executable, "-m", "lyrics", "chat", "--model", str(checkpoint), "--image", str(tmp_path / "scene.png"),
               "--max-new-tokens", "6", "--save-vis", str(tmp_path / "vis.png")]  # fmt: skip
    env = {**os.environ, "COLUMNS": "200", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    answers = [line.split("lyrics: ", 1)[1].strip() for line in done.stdout.splitlines() if "lyrics: " in line]
    assert answers == [first.text, second.text, first.text]  # /reset starts a new dialogue
    assert "expected four numbers" in done.stdout
    assert sorted(p.name for p in tmp_path.glob("vis-*.png")) == ["vis-1.png", "vis-2.png", "vis-3.png"]


def test_helpers():
    assert vis_path(__import__("pathlib").Path("a/b.png"), 3).name == "b-3.png"


def test_commands_are_registered():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0 and all(name in result.output for name in ("chat", "serve", "demo-ui"))
    serve_help = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert "--allow-remote-urls" in serve_help.output and "--max-batch-size" in serve_help.output and "--api-key" in serve_help.output


def test_chat_refuses_a_refiner_that_contradicts_the_checkpoint(checkpoint, scenes, tmp_path):
    scenes[0].save(tmp_path / "scene.png")
    recorded = with_refiner(checkpoint, tmp_path / "ckpt", trained={"tag_threshold": 0.4})
    base = ["chat", "--model", str(recorded), "--image", str(tmp_path / "scene.png"), "--prompt", "hi", "--max-new-tokens", "2"]
    result = CliRunner().invoke(app, [*base, "--refiner", "tagger=clip"], env={"COLUMNS": "400"})
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)  # a clear error, no traceback
    assert "tagger: 'toy' vs 'clip'" in result.output and "trained_refiner_config" in result.output
    agreeing = CliRunner().invoke(app, [*base, "--refiner", "tag_threshold=0.4", "--refiner", "batch_size=2"])
    assert agreeing.exit_code == 0, agreeing.output
    typo = CliRunner().invoke(app, [*base, "--refiner", "taggr=clip"])
    assert typo.exit_code == 2 and "unknown RefinerConfig field" in typo.output


def test_chat_on_a_paper_checkpoint_says_how_to_give_ram_and_takes_an_explicit_refiner(checkpoint, scenes, tmp_path):
    """An older checkpoint (no record) of the paper preset names RAM++ by `ram_plus_swin_b`: a clear
    error, not a traceback; an explicit --refiner still works for such a checkpoint."""
    scenes[0].save(tmp_path / "scene.png")
    old = with_refiner(checkpoint, tmp_path / "ckpt", refiner={"tagger": "ram", "tagger_model": "ram_plus_swin_b"})
    base = ["chat", "--model", str(old), "--image", str(tmp_path / "scene.png"), "--prompt", "hi", "--max-new-tokens", "2"]
    result = CliRunner().invoke(app, base, env={"COLUMNS": "400"})
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "needs the path of a RAM++ checkpoint file" in result.output and "ram_plus_swin_b" in result.output
    assert CliRunner().invoke(app, [*base, "--refiner", "tagger=toy"]).exit_code == 0
