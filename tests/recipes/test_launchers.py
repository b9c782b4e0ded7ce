"""Both recipes under every documented launcher config (`configs/accelerate/`), two CPU processes on
gloo, at tiny widths with the `paper` preset's structure: stage 2 trains the MQ-Former, projection and
LoRA (q, v) in fp32 beside a frozen bfloat16 LLM.

Each run checks that the loss falls, that a run resumed from its middle checkpoint ends with the
same weights as the uninterrupted run, and that the checkpoint written at the end loads back equal to
the in-memory model (gathered across ranks, as FSDP needs).

DeepSpeed runs where it imports: with two processes where there are two GPUs; on CPU in one process,
because accelerate (1.16) counts a CPU DeepSpeed launch as one process whatever the launcher started,
so two CPU ranks would read the same data.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("launch_worker.py")
LAUNCHERS = {
    "ddp": ROOT / "configs/accelerate/ddp.yaml",
    "fsdp": ROOT / "configs/accelerate/fsdp.yaml",
    "deepspeed-zero2": ROOT / "configs/accelerate/deepspeed-zero2.yaml",
    "deepspeed-zero3": ROOT / "configs/accelerate/deepspeed-zero3.yaml",
}
EXPECTED_TYPE = {"ddp": "MULTI_CPU", "fsdp": "FSDP", "deepspeed-zero2": "DEEPSPEED", "deepspeed-zero3": "DEEPSPEED"}


def deepspeed_missing() -> str | None:
    try:
        import deepspeed  # noqa: F401
    except Exception as error:  # not installed, or installed without its dependencies
        return f"deepspeed does not import here ({type(error).__name__}: {error}); `pip install deepspeed` to run it"
    return None
STEPS = 4
GLOBAL_BATCH = 4


def processes(launcher: str) -> int:
    if launcher.startswith("deepspeed"):
        return 2 if torch.cuda.device_count() >= 2 else 1
    return 2


def launch(launcher: Path, config: dict, out: Path, resume: bool = False, nproc: int = 2) -> dict:
    config_file = out.parent / f"{out.name}-{config['recipe']}.json"
    config_file.write_text(json.dumps(config))
    result = out.parent / f"{out.name}-{config['recipe']}-result.json"
    result.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launcher), "--num_processes", str(nproc),
        "--mixed_precision", "no", "--main_process_port", "0", str(WORKER), str(config_file), str(result),
    ] + (["--resume"] if resume else [])  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "tests"))
    proc = subprocess.run(cmd, env=env, timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(result.read_text()) | {"memory": str(result.with_suffix(".safetensors"))}


def stage1_config(world: Path, out: Path, nproc: int) -> dict:
    return {
        "recipe": "stage1",
        "model": {"preset": "tiny", "overrides": {"refiner_config": {"tagger": "toy"}},
                  "mqformer_tokenizer": str(world / "mq_tokenizer"), "vision_model": str(world / "vision")},
        "data": {"captions": str(world / "captions.json"), "images": str(world / "images"), "refiner_store": str(world / "store")},
        "trainer": {"output_dir": str(out), "max_steps": STEPS, "batch_size": GLOBAL_BATCH // nproc, "lr": 2e-3, "warmup_ratio": 0.0,
                    "log_every": 1, "save_every": STEPS // 2, "keep_checkpoints": 3, "progress": False, "seed": 1},
    }  # fmt: skip


def stage2_config(world: Path, stage1: Path, records: Path, out: Path, nproc: int) -> dict:
    return {
        "recipe": "stage2",
        "model": {"preset": str(stage1), "stage1": str(stage1), "text_model": str(world / "llm"), "vision_model": str(world / "vision"),
                  "torch_dtype": "bfloat16", "overrides": {"train_mqformer": True, "lora_target_modules": ["q_proj", "v_proj"]}},
        "data": {"records": str(records), "images": str(world / "images"), "refiner_store": str(world / "store")},
        "trainer": {"output_dir": str(out), "max_steps": STEPS, "batch_size": GLOBAL_BATCH // nproc, "lr": 2e-3, "warmup_ratio": 0.0,
                    "log_every": 1, "save_every": STEPS // 2, "keep_checkpoints": 3, "progress": False, "seed": 1},
    }  # fmt: skip


def resume_from_middle(run: Path) -> None:
    """What a crash after the middle checkpoint leaves: that checkpoint, no final, no later ones."""
    shutil.rmtree(run / "final")
    shutil.rmtree(run / "checkpoints" / f"step-{STEPS}")
    (run / "logs" / "train.jsonl").unlink()


def weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v for f in sorted(path.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def check(result: dict, launcher: str, recipe: str) -> None:
    assert result["processes"] == processes(launcher)
    assert result["distributed_type"].endswith(EXPECTED_TYPE[launcher])
    from safetensors.torch import load_file

    memory = load_file(result["memory"])
    if recipe == "stage1":
        from lyrics.models.pretraining import LyricsForPretraining

        saved = LyricsForPretraining.from_pretrained(result["final"]).state_dict()
    else:
        from lyrics.models.conditional_generation import LyricsForConditionalGeneration

        saved = LyricsForConditionalGeneration.from_pretrained(result["final"]).state_dict()
    assert len(memory) > 0
    assert [k for k in memory if k not in saved or not torch.equal(saved[k].float(), memory[k])] == []
    losses = result["losses"]
    assert len(losses) == STEPS and losses[-1] < losses[0], losses


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_both_stages_under_launcher(launcher, world, tmp_path):
    if launcher.startswith("deepspeed") and deepspeed_missing():
        pytest.skip(deepspeed_missing())
    from lyrics.data.convert import convert
    from lyrics.data.records import save_records

    records = tmp_path / "records.json"
    save_records(convert("coco-captions", [world / "captions.json"], images=world / "images").records, records)
    config_file, nproc = LAUNCHERS[launcher], processes(launcher)
    assert yaml.safe_load(config_file.read_text())["num_processes"] >= 2

    run1 = tmp_path / "stage1"
    check(launch(config_file, stage1_config(world, run1, nproc), run1, nproc=nproc), launcher, "stage1")
    full1 = weights(run1 / "final")
    resume_from_middle(run1)
    launch(config_file, stage1_config(world, run1, nproc), run1, resume=True, nproc=nproc)
    resumed1 = weights(run1 / "final")
    assert full1.keys() == resumed1.keys()
    assert [k for k in full1 if not (full1[k] == resumed1[k]).all()] == []

    run2 = tmp_path / "stage2"
    config2 = stage2_config(world, run1 / "final", records, run2, nproc)
    check(launch(config_file, config2, run2, nproc=nproc), launcher, "stage2")
    full2 = weights(run2 / "final") | weights(run2 / "final" / "adapter")
    resume_from_middle(run2)
    launch(config_file, config2, run2, resume=True, nproc=nproc)
    resumed2 = weights(run2 / "final") | weights(run2 / "final" / "adapter")
    assert any("lora_" in k for k in full2) and full2.keys() == resumed2.keys()
    assert [k for k in full2 if not (full2[k] == resumed2[k]).all()] == []


def test_every_shipped_launcher_config_is_exercised():
    shipped = {p.stem for p in (ROOT / "configs/accelerate").glob("*.yaml")}
    # cpu-2proc.yaml is the CPU form of ddp.yaml: on CPU both start the same gloo data-parallel run
    same_path = {"cpu-2proc": "ddp"}
    assert shipped == set(LAUNCHERS) | set(same_path)
    for name, twin in same_path.items():
        assert yaml.safe_load((ROOT / f"configs/accelerate/{name}.yaml").read_text())["distributed_type"] == "MULTI_CPU"
        assert twin in LAUNCHERS
