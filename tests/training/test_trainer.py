"""The shared training loop: schedule, exact resume after SIGKILL, and a two-process gloo run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lyrics.training.trainer import TrainerConfig

RUN = [sys.executable, str(Path(__file__).with_name("tiny_run.py"))]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def test_cosine_schedule_with_fifteen_percent_warmup(tmp_path):
    """The trainer's schedule (transformers' cosine with warm-up): linear up over 15% of the steps,
    then cosine down to `min_lr_ratio` of the peak."""
    from types import SimpleNamespace

    from torch import nn

    from lyrics.training.trainer import Trainer

    for floor in (0.0, 0.1):
        model = nn.Linear(1, 1)
        config = TrainerConfig(output_dir=str(tmp_path / str(floor)), max_steps=100, batch_size=1, lr=1.0, warmup_ratio=0.15,
                               min_lr_ratio=floor, log_every=1, save_every=0, progress=False, max_grad_norm=None)  # fmt: skip
        trainer = Trainer(config, model, [torch.zeros(1)] * 100, torch.stack, lambda m, b: SimpleNamespace(loss=m(b).sum()))
        trainer.train()
        trainer.cleanup()
        lrs = [json.loads(line)["lr"] for line in (tmp_path / str(floor) / "logs" / "train.jsonl").read_text().splitlines()]
        # the log holds the lr after each step (k + 1 scheduler steps): (k + 1) / 15 while warming up
        assert lrs[0] == pytest.approx(1 / 15) and lrs[13] == pytest.approx(14 / 15) and lrs[14] == pytest.approx(1.0)
        assert all(a >= b for a, b in zip(lrs[14:], lrs[15:]))
        assert lrs[-1] == pytest.approx(floor, abs=1e-3)


def test_paper_optimiser_is_the_default():
    cfg = TrainerConfig()
    assert (cfg.lr, cfg.betas, cfg.weight_decay, cfg.warmup_ratio) == (1e-4, (0.9, 0.98), 0.05, 0.15)
    with pytest.raises(ValueError, match="unknown trainer option"):
        TrainerConfig.from_dict({"learning_rate": 1})


def weights(path):
    return load_file(str(path))


def assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].equal(b[key]), key


def test_killed_run_resumes_to_bitwise_identical_weights(tmp_path):
    subprocess.run([*RUN, str(tmp_path / "full"), "--steps", "8", "--save-every", "2"], check=True, env=ENV, timeout=300)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*RUN, str(killed), "--steps", "8", "--save-every", "2", "--sleep", "0.4"], env=ENV)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "step-4" / "trainer_state.json").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final-rank0.safetensors").exists()

    subprocess.run([*RUN, str(killed), "--steps", "8", "--save-every", "2", "--resume"], check=True, env=ENV, timeout=300)
    assert_identical(weights(killed / "final-rank0.safetensors"), weights(tmp_path / "full" / "final-rank0.safetensors"))
    steps = [json.loads(line)["step"] for line in (killed / "logs" / "train.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # the lines logged after step 4 before the kill are not repeated
    # the loss log holds no wall-clock field, so the resumed run's equals the uninterrupted run's
    assert (killed / "logs" / "train.jsonl").read_bytes() == (tmp_path / "full" / "logs" / "train.jsonl").read_bytes()
    timing = [json.loads(line) for line in (killed / "logs" / "timing.jsonl").read_text().splitlines()]
    assert [t["step"] for t in timing] == steps and all(t["samples_per_second"] > 0 for t in timing)
    # checkpoints hold the trainable weights only, atomically (no temporary directory left behind)
    ckpt = killed / "checkpoints"
    assert not list(ckpt.glob(".tmp-*"))
    assert json.loads((ckpt / "step-8" / "trainer_state.json").read_text())["step"] == 8


def test_two_processes_end_with_identical_weights_and_exit_cleanly(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *RUN[1:], str(out), "--steps", "4", "--save-every", "0"]
    result = subprocess.run(cmd, env=ENV, timeout=300, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "terminate called" not in result.stderr
    assert_identical(weights(out / "final-rank0.safetensors"), weights(out / "final-rank1.safetensors"))
    # rank 0 logged the mean over both ranks; 4 steps of 2 x 4 samples
    log = [json.loads(line) for line in (out / "logs" / "train.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]


def test_gradient_checkpointing_option_reaches_the_model(tmp_path):
    import tiny
    from lyrics.models.mqformer import MQFormerModel
    from lyrics.training.trainer import Trainer

    def checkpointing(model):
        return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())

    for enabled in (False, True):
        model = MQFormerModel(tiny.mqformer_config())
        config = TrainerConfig(output_dir=str(tmp_path / str(enabled)), max_steps=1, gradient_checkpointing=enabled, progress=False)
        Trainer(config, model, [0], list, lambda m, b: None)
        assert checkpointing(model) is enabled


def test_one_process_may_train_again_in_another_precision(tmp_path):
    """The quickstart trains stage 1 in fp32 and stage 2 in bf16 in one process; accelerate alone
    would refuse the second Accelerator."""
    from torch import nn

    from lyrics.training.trainer import Trainer

    for precision in ("no", "bf16", "no"):
        config = TrainerConfig(output_dir=str(tmp_path / precision), max_steps=1, mixed_precision=precision, progress=False)
        trainer = Trainer(config, nn.Linear(2, 2), [0], list, lambda m, b: None)
        assert trainer.accelerator.mixed_precision == precision


def test_logged_loss_is_the_mean_over_accumulated_micro_batches(tmp_path):
    """Each log line averages every micro-batch since the previous one, not the last micro-batch."""
    from types import SimpleNamespace

    from torch import nn

    from lyrics.training.trainer import Trainer

    model = nn.Linear(1, 1)
    data = [torch.tensor([float(i)]) for i in range(8)]

    def step(m, batch):
        return SimpleNamespace(loss=m.weight.sum() * 0 + batch.mean())

    config = TrainerConfig(output_dir=str(tmp_path), max_steps=4, batch_size=1, gradient_accumulation_steps=2, log_every=1, save_every=0, progress=False)
    trainer = Trainer(config, model, data, torch.stack, step)
    trainer.train()
    trainer.cleanup()
    losses = [json.loads(line)["loss"] for line in (tmp_path / "logs" / "train.jsonl").read_text().splitlines()]
    # 4 steps x 2 micro-batches = one pass over the 8 values 0..7: each value once, pairs averaged
    assert len(losses) == 4 and sum(losses) / 4 == 3.5
    assert all(float(2 * v).is_integer() for v in losses)
