"""Small shared pieces of the stand-in trainers: seeding, the learning-rate schedule, the loss log,
and saving a checkpoint directory atomically."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup

LOG_NAME = "train_log.json"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a dedicated generator for data order."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def epoch_order(n: int, needed: int, generator: torch.Generator) -> torch.Tensor:
    """`needed` sample indices: whole shuffled epochs of range(n) back to back."""
    epochs = max(1, -(-needed // n))
    return torch.cat([torch.randperm(n, generator=generator) for _ in range(epochs)])[:needed]


@dataclass
class TrainLog:
    """The loss curve and what else a reader needs to judge a run; written as JSON beside the weights."""

    name: str
    config: dict[str, Any]
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    world: dict[str, Any] = field(default_factory=dict)  # `world_identity` of the training data

    def record(self, step: int, loss: float, lr: float) -> None:
        self.steps.append(step)
        self.loss.append(round(float(loss), 5))
        self.lr.append(float(lr))

    @property
    def final_loss(self) -> float:
        """Mean of the last 10% of steps (one step's loss is noisy)."""
        tail = self.loss[-max(1, len(self.loss) // 10):]
        return float(sum(tail) / len(tail)) if tail else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config,
            "steps": self.steps,
            "loss": self.loss,
            "lr": self.lr,
            "final_loss": self.final_loss,
            "metrics": self.metrics,
            "seconds": round(self.seconds, 3),
            "world": self.world,
        }


def train_loop(
    name: str,
    config: dict[str, Any],
    model: torch.nn.Module,
    batches: Callable[[int], dict[str, torch.Tensor]],
    loss_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor],
    steps: int,
    lr: float,
    warmup: int,
    weight_decay: float,
) -> TrainLog:
    """AdamW with warm-up + cosine for `steps` steps; `batches(step)` gives the step's batch."""
    log = TrainLog(name=name, config=config)
    start = time.perf_counter()
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98)
    )
    # linear warm-up, then cosine decay to 10% (short runs still end gently)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup, steps, min_lr_rate=0.1)
    model.train()
    for step in range(steps):
        loss = loss_fn(model, batches(step))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        log.record(step, loss.item(), scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    model.eval()
    log.seconds = time.perf_counter() - start
    return log


def save_atomically(out_dir: str | Path, write: Callable[[Path], None]) -> Path:
    """Run `write(tmp_dir)` then move the directory into place, replacing an older checkpoint.

    A crash leaves either the old checkpoint or the new one, never a mix (`lyrics.atomic`).
    """
    from lyrics.atomic import atomic_directory

    with atomic_directory(out_dir) as tmp:
        write(tmp)
    return Path(out_dir)


def write_log(directory: Path, log: TrainLog) -> None:
    (directory / LOG_NAME).write_text(json.dumps(log.to_dict(), indent=1), encoding="utf-8")
