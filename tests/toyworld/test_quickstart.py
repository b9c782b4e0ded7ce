"""`lyrics quickstart --fast` end to end (the real CLI in a subprocess, SmolLM2 as its LLM), then
`lyrics chat` and one `lyrics ablate` row on its checkpoint. The run is shared by the module (about
3.5 minutes on 2 AVX2 cores in fp32); a second run of the same seed, killed in stage 2 and resumed,
must end with the same files byte for byte (about 2.5 minutes more, the LLM conversion cached)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lyrics.toyworld.ablate import ROWS, ablation_table, row_overrides
from lyrics.toyworld.quickstart import STAGES, TOY_MODEL



def _cli(*args: str, timeout: int = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "lyrics", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    # a relative --out, as in the README's `make demo`
    cwd = tmp_path_factory.mktemp("quickstart")
    done = _cli("quickstart", "--fast", "--out", "runs/fast", cwd=cwd)
    out = cwd / "runs" / "fast"
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout


def test_every_stage_ran_and_wrote_its_outputs(fast_run):
    out, stdout = fast_run
    summary = json.loads((out / "quickstart.json").read_text())
    assert list(summary["timings"]) == [*STAGES, "total"]
    assert re.search(r"wall time: \d+ s", stdout)
    assert (out / "world" / "world.json").is_file()
    assert (out / "standins" / "clip" / "model.safetensors").is_file() and not (out / "standins" / "lm").exists()
    source = json.loads((out / "llm" / "source.json").read_text())
    assert source["model"] == "SmolLM2-135M-Instruct" and len(source["sha256"]) == 64
    assert any((out / "refiner").rglob("*.safetensors")) or any((out / "refiner").iterdir())
    assert (out / "stage1" / "final" / "model.safetensors").is_file()
    assert (out / "stage2" / "final" / "lyrics_model.safetensors").is_file()
    report = (out / "report.html").read_text()
    assert "<img" in report and "loss" in report.lower()


# What two runs of one commit, seed, thread count and machine must write byte for byte.
IDENTICAL = (
    "results.json", "stage1/logs/train.jsonl", "stage2/logs/train.jsonl", "stage1/final/model.safetensors",
    "stage2/final/lyrics_model.safetensors", "standins/mqformer_tokenizer/tokenizer.json",
)  # fmt: skip


# The first user of `fast_run` pays for building it (a whole --fast quickstart) and this test runs
# another with a kill in the middle: about 8 minutes on a loaded 2-core machine, near the suite's
# 600 s default.
@pytest.mark.timeout(1200)
def test_a_killed_rerun_resumes_to_byte_identical_results(fast_run, tmp_path):
    """A second `--fast` run of the same seed, killed (the whole process group, SIGKILL) once stage 2
    has written its first checkpoint, then run again into the same folder, resumes from that
    checkpoint and ends with the first run's results, training logs and weights, byte for byte."""
    first, _ = fast_run
    out = tmp_path / "again"
    env = {**os.environ, "COLUMNS": "200", "TOKENIZERS_PARALLELISM": "false"}
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "lyrics", "quickstart", "--fast", "--out", str(out)], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    checkpoints = out / "stage2" / "checkpoints"
    try:
        deadline = time.monotonic() + 600
        while not (checkpoints.is_dir() and any((c / "trainer_state.json").is_file() for c in checkpoints.iterdir())):
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no stage-2 checkpoint within 10 minutes"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "stage2" / "final").exists()  # killed inside stage 2
    done = _cli("quickstart", "--fast", "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"resumed from \S+step-\d+ at step [1-9]", done.stdout + done.stderr)  # not from scratch
    for name in IDENTICAL:
        assert (out / name).read_bytes() == (first / name).read_bytes(), f"{name} differs after the resumed run"


@pytest.mark.parametrize("stage, weights", [("stage1", "model.safetensors"), ("stage2", "lyrics_model.safetensors")])
def test_the_recorded_yaml_recipe_reruns_a_stage_by_hand(fast_run, tmp_path, stage, weights):
    """OUT/STAGE/recipe.txt is `lyrics train configs/STAGE/toy.yaml --set ...`; run by hand into
    another folder it trains the quickstart's weights byte for byte."""
    import shlex

    out, _ = fast_run
    command = shlex.split((out / stage / "recipe.txt").read_text())
    assert command[:3] == ["lyrics", "train", str(Path(__file__).resolve().parents[2] / "configs" / stage / "toy.yaml")]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(len(os.sched_getaffinity(0)))}
    again = tmp_path / stage
    done = subprocess.run([sys.executable, "-m", "lyrics", *command[1:], "--set", f"trainer.output_dir={again}"], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (again / "final" / weights).read_bytes() == (out / stage / "final" / weights).read_bytes()
    assert (again / "logs" / "train.jsonl").read_text() == (out / stage / "logs" / "train.jsonl").read_text()


def test_the_stage_recipes_are_the_yaml_files_plus_overrides(tmp_path, monkeypatch):
    """What the quickstart trains is configs/STAGE/toy.yaml with its `--set` overrides: the default
    model needs none of the model section's, an ablation row exactly its switch."""
    from types import SimpleNamespace

    import lyrics.recipes
    from lyrics.presets import merge
    from lyrics.toyworld.quickstart import DEFAULT, Quickstart

    monkeypatch.setattr(lyrics.recipes, "run", lambda config, resume=False: tmp_path)
    for model, expected in ((TOY_MODEL, []), (merge(TOY_MODEL, {"mqformer_config": {"num_grounding_query_tokens": 0}}), ["model.overrides.mqformer_config.num_grounding_query_tokens=0"])):
        run = Quickstart(tmp_path / str(len(expected)), DEFAULT, model=model)
        run.standins, run.llm = SimpleNamespace(clip=tmp_path / "clip", mqformer_tokenizer=tmp_path / "tok"), tmp_path / "llm"
        run.stage_stage1()
        overrides = (run.out / "stage1" / "recipe.txt").read_text().split("--set ")[1:]
        assert [o.strip().strip("'") for o in overrides if o.startswith("model.overrides")] == expected
        # the default budget is the YAML's: only the folder is set
        assert [o.split("=")[0] for o in overrides if o.startswith("trainer.")] == ["trainer.output_dir"]
    run.stage_stage2(None)  # without pre-training: the tiny preset, the whole model, no stage-1 folder
    text = (run.out / "stage2" / "recipe.txt").read_text()
    assert "model.preset=tiny" in text and "model.stage1=null" in text and "model.overrides.refiner_config=" in text


def test_results_json_maps_metrics_to_value_and_baseline(fast_run):
    out, _ = fast_run
    results = json.loads((out / "results.json").read_text())
    for split in ("test", "zeroshot"):
        for key in ("captioning/CIDEr", "vqa/accuracy", "vqa/color", "rec/Acc@0.5", "pope_random/F1", "pope_adversarial/F1", "pope_paraphrase/F1", "pope_paraphrase/yes_ratio"):
            entry = results[f"{split}/{key}"]
            assert set(entry) == {"value", "baseline"} and all(isinstance(v, float) for v in entry.values())
    for key in ("naming_accuracy", "Acc@0.5", "neighbour_Acc@0.5"):  # referential dialogue, test split only
        entry = results[f"test/referential/{key}"]
        assert set(entry) == {"value", "baseline"} and 0 <= entry["value"] <= 100 and 0 <= entry["baseline"] <= 100


def test_no_training_record_words_a_question_as_the_held_out_paraphrases(fast_run):
    from lyrics.toyworld.pope import PARAPHRASES

    out, _ = fast_run
    text = "\n".join(p.read_text() for p in sorted((out / "records").glob("*.json")))
    assert re.search(r"Is there an? [a-z ]+\?", text)  # the search finds the trained wording
    for phrasing in PARAPHRASES:
        before, after = phrasing.split("{a}")
        assert not re.search(re.escape(before) + r"an? [a-z ]+" + re.escape(after), text), phrasing


def test_the_stage2_checkpoint_is_smollm2_with_lora_and_its_chat_template(fast_run):
    """The checkpoint's LLM is the 30-layer, 576-wide SmolLM2 converted in the run; its processor
    renders prompts with SmolLM2's ChatML template; the stage-2 loss falls within the fast budget."""
    from lyrics.models.processing import LyricsProcessor

    out, _ = fast_run
    final = out / "stage2" / "final"
    config = json.loads((final / "config.json").read_text())
    text = config["text_config"]
    assert (text["num_hidden_layers"], text["hidden_size"], text["model_type"]) == (30, 576, "llama")
    assert Path(config["text_model_name_or_path"]).resolve() == (out / "llm").resolve()
    assert (final / "adapter" / "adapter_model.safetensors").is_file()
    processor = LyricsProcessor.from_pretrained(final)
    assert processor.config.template.kind == "tokenizer"
    ids, _ = processor.encode([{"from": "human", "value": "<image>\nIs there a red star?"}], add_generation_prompt=True)
    assert processor.tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
    losses = [json.loads(line)["loss"] for line in (out / "stage2" / "logs" / "train.jsonl").read_text().splitlines()]
    assert losses and losses[-1] < losses[0]


def test_the_quickstart_ends_with_a_chat_about_a_test_image(fast_run):
    out, stdout = fast_run
    chat = json.loads((out / "chat.json").read_text())
    questions = [e["question"] for e in chat["exchanges"]]
    assert any(q.startswith("What color") for q in questions) and any(q.startswith("Where is") for q in questions)
    assert all(isinstance(e["answer"], str) for e in chat["exchanges"]) and (out / "chat.png").stat().st_size > 0
    assert "A chat with the model" in stdout and questions[0] in stdout


def test_chat_answers_on_the_quickstart_checkpoint_and_draws_boxes(fast_run, tmp_path):
    out, _ = fast_run
    image = sorted((out / "world" / "images" / "toytest").glob("*.jpg"))[0]
    picture = tmp_path / "answer.png"
    done = _cli("chat", "--model", str(out / "stage2" / "final"), "--image", str(image), "--prompt", "Where is the star?", "--save-vis", str(picture), "--max-new-tokens", "24")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip()
    assert picture.is_file() and picture.stat().st_size > 0


def test_one_ablation_row_reuses_the_run_and_reports_its_difference(fast_run):
    from lyrics.toyworld.ablate import run_ablation
    from lyrics.toyworld.quickstart import FAST

    out, _ = fast_run
    table = run_ablation(out, FAST, rows=["no_pretraining"], log=lambda _: None)
    assert set(table) == {"no_pretraining"} and "colour VQA" in table["no_pretraining"]
    assert not (out / "ablate" / "no_pretraining" / "stage1").exists()  # this row skips stage 1
    summary = json.loads((out / "ablation.json").read_text())
    assert summary["rows"] == table and summary["budget"]["stage2_steps"] == FAST.stage2_steps


def test_ablation_rows_change_exactly_their_switch():
    assert row_overrides("full", TOY_MODEL) == ({}, True)
    assert row_overrides("no_pretraining", TOY_MODEL) == ({}, False)
    assert row_overrides("no_grounding_queries", TOY_MODEL)[0] == {"mqformer_config": {"num_grounding_query_tokens": 0}}
    assert row_overrides("spatial_text_switch", TOY_MODEL)[0] == {"spatial_text_in_prompt": not TOY_MODEL["spatial_text_in_prompt"]}
    with pytest.raises(ValueError, match="unknown ablation row"):
        row_overrides("no_such_row", TOY_MODEL)
    rendered = ablation_table({"full": {"colour VQA": 40.0}, "no_pretraining": {"colour VQA": 30.0}})
    assert rendered.row_count == 2 and set(ROWS) >= {"full", "no_pretraining"}


def test_a_folder_with_another_run_is_refused(tmp_path):
    from lyrics.toyworld.quickstart import FAST, Quickstart

    (tmp_path / "quickstart.json").write_text(json.dumps({"seed": 5, "budget": {}, "model": {}}))
    with pytest.raises(ValueError, match="different"):
        Quickstart(tmp_path, FAST, seed=0).run()
    assert not (tmp_path / "world").exists()  # refused before any stage ran


def test_a_mixture_replaces_stage_twos_and_is_recorded(tmp_path, monkeypatch):
    """`Quickstart(mixture=...)` trains stage 2 on that mixture; a folder holding another mixture is refused."""
    from types import SimpleNamespace

    import lyrics.recipes
    from lyrics.toyworld.quickstart import DEFAULT, MIXTURE, Quickstart

    configs = []
    monkeypatch.setattr(lyrics.recipes, "run", lambda config, resume=False: configs.append(config) or tmp_path)
    mixture = {"vqa": MIXTURE["vqa"][:3] + (1.0,)}
    for given in (None, mixture):
        run = Quickstart(tmp_path, DEFAULT, mixture=given)
        run.standins, run.llm = SimpleNamespace(clip=tmp_path / "clip"), tmp_path / "llm"
        run.stage_stage2(None)
    default, chosen = ({n: s for n, s in c["data"]["mixture"].items() if s is not None} for c in configs)
    assert set(default) == set(MIXTURE) and chosen == {"vqa": {"records": str(tmp_path / "records/vqa.json"), "weight": 1.0}}
    summary = json.loads(json.dumps({"seed": 0, "budget": {}, "model": {}, "mixture": mixture}))
    (tmp_path / "quickstart.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match="different mixture"):
        Quickstart(tmp_path, DEFAULT).check_previous({"seed": 0, "budget": {}, "model": {}})
    Quickstart(tmp_path, DEFAULT, mixture=mixture).check_previous(summary)


def test_time_left_scales_the_expected_seconds_by_this_machines_speed(tmp_path):
    from dataclasses import replace

    from lyrics.toyworld.quickstart import DEFAULT, EXPECTED_SECONDS, STAGES, Quickstart

    for precision in ("fp32", "bf16"):
        run = Quickstart(tmp_path, replace(DEFAULT, precision=precision))
        table = EXPECTED_SECONDS[run.timing_kind]
        assert run.timing_kind.startswith(precision) and run.expected_seconds is table and run.time_left() is None  # nothing measured yet
        run.timings = {"world": 2 * table["world"]}  # this machine runs at half the speed
        rest = sum(table[s] for s in STAGES if s != "world")
        assert abs(run.time_left() - 2 * rest) < 1e-6
        half = Quickstart(tmp_path, replace(DEFAULT, precision=precision, stage2_steps=DEFAULT.stage2_steps // 2))
        half.timings = dict(run.timings)
        assert abs(run.time_left() - half.time_left() - table["stage2"]) < 1e-6  # half the stage-2 work
    # fp32's stage 2 is the slow one: the same finished stages predict more time left than in bf16
    assert EXPECTED_SECONDS["fp32"]["stage2"] > 2 * EXPECTED_SECONDS["bf16"]["stage2"]
    assert EXPECTED_SECONDS["bf16"]["stage2"] < EXPECTED_SECONDS["bf16-avx512"]["stage2"] < EXPECTED_SECONDS["fp32"]["stage2"]
