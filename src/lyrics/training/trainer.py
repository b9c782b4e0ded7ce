"""One training loop for both stages, on accelerate (paper section 4: AdamW beta (0.9, 0.98), weight
decay 0.05, cosine schedule with 15% linear warm-up, peak lr 1e-4).

Scale comes from existing engines: `accelerate` wraps the model for DDP / FSDP / DeepSpeed (configs in
`configs/accelerate/`) and handles mixed precision and gradient accumulation; `torchrun` or
`accelerate launch` starts the processes; `DistributedSampler` shards the data. The same code runs in
one CPU process.

Batches are built by the trainer's own DataLoader (its order is a function of the epoch, which
makes resuming exact) and moved to `accelerator.device` at each step. Under FSDP the checkpoint holds
each rank's shard; the final model is gathered with `accelerator.get_state_dict` (collective) and
written by the main process (`Trainer.full_state_dict`).

Checkpoints are written atomically (a temporary directory renamed into place when complete) with the
trainable weights, optimizer, scheduler, every rank's RNG state and the data position; `resume=True`
continues from the newest complete checkpoint so that the run ends with the same weights, bit for bit
on CPU, as one that was never interrupted (tested with SIGKILL).

Length: the loop and the launcher glue it needs (FSDP on CPU, DeepSpeed batch fields, atomic
checkpoints, exact resume); splitting them would spread one loop over several files.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import send_to_device
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler
from transformers import get_cosine_with_min_lr_schedule_with_warmup

STATE_FILE = "trainer_state.json"
LOG_FILE = "train.jsonl"  # per log line: step, epoch, lr and the loss fields (deterministic)
TIMING_FILE = "timing.jsonl"  # per log line: step, samples_per_second, seconds since the previous line


def _allow_another_precision(mixed_precision: str) -> None:
    """accelerate keeps one state per process and refuses a second Accelerator with another mixed
    precision; a process that trains again with another one (the quickstart: stage 1 in fp32, then
    stage 2 in bf16) drops the old precision state. The process state (ranks, process group) stays."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, mixed_precision):
        AcceleratorState._reset_state(reset_partial_state=False)


def _fsdp_without_gpu(accelerator) -> None:
    """Keep a launcher's FSDP request on CPU.

    accelerate (1.16) switches to FSDP only on accelerators: with `ACCELERATE_USE_FSDP=true` and no
    GPU it silently falls back to plain multi-process CPU training (DDP), so a CPU run of an FSDP
    config would test another code path than the GPU run. FSDP2's `fully_shard` runs on CPU with
    gloo, so the trainer switches the state to FSDP itself, with the plugin accelerate reads from the
    launcher's environment (`FSDP_*` variables)."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    wanted = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if not wanted or accelerator.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin = FullyShardedDataParallelPlugin()
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    AcceleratorState._shared_state["fsdp_plugin"] = plugin
    AcceleratorState._shared_state["distributed_type"] = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def _configure_deepspeed(accelerator, batch_size: int, accumulation: int) -> None:
    """Fill the DeepSpeed config's "auto" micro-batch from the trainer config (accelerate then derives
    `train_batch_size`).

    accelerate derives them from a DataLoader passed to `prepare`; the trainer builds its loaders
    itself (their order is what makes resuming exact), so it sets them here. A fixed accumulation in
    the DeepSpeed config that disagrees with the trainer's is an error, not a silent override."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    plugin = accelerator.state.deepspeed_plugin
    ds = plugin.deepspeed_config
    if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        ds["train_micro_batch_size_per_gpu"] = batch_size
    elif int(ds["train_micro_batch_size_per_gpu"]) != batch_size:
        raise ValueError(
            f"DeepSpeed config sets train_micro_batch_size_per_gpu={ds['train_micro_batch_size_per_gpu']}, "
            f"trainer.batch_size is {batch_size}: make them equal (or set the DeepSpeed value to auto)"
        )
    steps = ds.get("gradient_accumulation_steps", "auto")
    if steps == "auto":
        ds["gradient_accumulation_steps"] = accumulation
    elif int(steps) != accumulation:
        raise ValueError(
            f"DeepSpeed config sets gradient_accumulation_steps={steps}, trainer.gradient_accumulation_steps "
            f"is {accumulation}: make them equal (or set the DeepSpeed value to auto)"
        )


def shuffled_sampler(dataset: Dataset, seed: int, epoch: int, rank: int, world: int) -> DistributedSampler:
    """The trainer's own order when no `sampler_fn` is given: the epoch's seeded shuffle, this rank's share."""
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    return sampler


def enable_activation_checkpointing(model: torch.nn.Module) -> bool:
    """Recompute activations in backward (non-reentrant checkpoints); False if `model` cannot.

    transformers renamed `gradient_checkpointing_enable` to `activation_checkpointing_enable` (the
    old name warns and goes in v6); the older releases this package allows have only the old one."""
    for method, kwargs in (("activation_checkpointing_enable", "activation_checkpointing_kwargs"), ("gradient_checkpointing_enable", "gradient_checkpointing_kwargs")):
        enable = getattr(model, method, None)
        if enable is not None:
            enable(**{kwargs: {"use_reentrant": False}})
            return True
    return False


@dataclass
class TrainerConfig:
    """Everything the loop needs; recipes fill it from the `trainer:` section of their YAML.

    Args:
        output_dir: run directory (checkpoints/, logs/, final/).
        max_steps: optimizer steps.
        batch_size: samples per device per micro-batch.
        gradient_accumulation_steps: micro-batches per optimizer step.
        lr, betas, weight_decay, warmup_ratio: the paper's AdamW + cosine schedule.
        min_lr_ratio: floor of the cosine schedule as a fraction of `lr` (0 = decay to zero).
        max_grad_norm: gradient clipping (None: off).
        mixed_precision: "no", "bf16" or "fp16" (the MQ-Former keeps fp32 weights either way).
        gradient_checkpointing: recompute activations of the MQ-Former (and the LLM) in backward.
        save_every, keep_checkpoints: checkpoint period in steps and how many to keep.
        log_every: period of the JSONL log (and TensorBoard) in optimizer steps.
        seed: seeds parameters, data order and per-sample randomness.
        num_workers: DataLoader workers.
        tensorboard: also log to TensorBoard (if installed) through accelerate.
        progress: show a progress bar on the main process.
    """

    output_dir: str = "runs/lyrics"
    max_steps: int = 1000
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.05
    warmup_ratio: float = 0.15
    min_lr_ratio: float = 0.0
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    save_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    tensorboard: bool = False
    progress: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainerConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown trainer option(s) {sorted(unknown)}; known: {sorted(known)}")
        data = dict(data)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)


@dataclass
class TrainerState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    samples: int = 0
    scheduler: dict = field(default_factory=dict)


StepFn = Callable[[torch.nn.Module, dict[str, Any]], Any]


class Trainer:
    """Runs `step_fn(model, batch) -> output with .loss` over `dataset` batches made by `collate_fn`.

    `step_fn` may return extra scalar fields (`loss_itc`, ...) which are logged: each log line holds
    the mean over every micro-batch since the previous line (accumulated ones included) and over
    ranks. Data order comes
    from `DistributedSampler(seed, epoch)`, or from `sampler_fn(epoch, rank, world_size)` when given;
    either way it is a function of the epoch, which is what makes resuming exact.
    """

    def __init__(
        self,
        config: TrainerConfig,
        model: torch.nn.Module,
        dataset: Dataset,
        collate_fn: Callable,
        step_fn: StepFn,
        log_fields: tuple[str, ...] = (),
        on_epoch: Callable[[int], None] | None = None,
        sampler_fn: Callable[[int, int, int], Any] | None = None,
    ):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.config = config
        self.output_dir = Path(config.output_dir)
        _allow_another_precision(config.mixed_precision)
        self.accelerator = Accelerator(
            # accelerate only picks its multi-process CPU mode (gloo) when told the run is on CPU; but
            # told so it drops a DeepSpeed launch, which runs on CPU through DeepSpeed's own accelerator.
            cpu=not torch.accelerator.is_available() and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true",
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            mixed_precision=config.mixed_precision,
            log_with="tensorboard" if config.tensorboard else None,
            project_dir=str(self.output_dir),
        )
        _fsdp_without_gpu(self.accelerator)
        set_seed(config.seed)
        self.model = model
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.step_fn = step_fn
        self.log_fields = log_fields
        self.on_epoch = on_epoch
        self.sampler_fn = sampler_fn
        self.state = TrainerState()
        if config.gradient_checkpointing:
            enable_activation_checkpointing(model)

    # --- setup -------------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            # BLIP-2 / BERT convention: no weight decay on biases, norms, queries and temperature.
            if param.ndim < 2 or "query_tokens" in name or "norm" in name.lower():
                no_decay.append(param)
            else:
                decay.append(param)
        if not decay and not no_decay:
            raise ValueError("the model has no trainable parameter")
        groups = [{"params": decay, "weight_decay": self.config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.config.lr, betas=self.config.betas)

    def _loader(self, epoch: int, skip: int) -> DataLoader:
        from accelerate.data_loader import SkipBatchSampler

        acc = self.accelerator
        if self.sampler_fn is not None:
            # e.g. a weighted mixture (Table 6); it must be deterministic given (epoch, rank, world).
            sampler = self.sampler_fn(epoch, acc.process_index, acc.num_processes)
        else:
            sampler = shuffled_sampler(self.dataset, self.config.seed, epoch, acc.process_index, acc.num_processes)
        batches = BatchSampler(sampler, self.config.batch_size, drop_last=True)
        if len(batches) == 0:
            raise ValueError(
                f"the dataset has {len(self.dataset)} samples: fewer than one batch of {self.config.batch_size} per process"
            )
        if skip:
            batches = SkipBatchSampler(batches, skip_batches=skip)
        # A dedicated generator: creating the iterator must not consume the global RNG, or a resumed
        # run would see different dropout than the uninterrupted one.
        return DataLoader(
            self.dataset, batch_sampler=batches, collate_fn=self.collate_fn, num_workers=self.config.num_workers,
            generator=torch.Generator().manual_seed(self.config.seed + epoch),
        )  # fmt: skip

    # --- checkpoints ---------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        root = self.output_dir / "checkpoints"
        found = [p for p in root.glob("step-*") if (p / STATE_FILE).is_file()] if root.is_dir() else []
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def _trainable_names(self) -> set[str]:
        model = self.accelerator.unwrap_model(self.model)
        return {n for n, p in model.named_parameters() if p.requires_grad}

    def save_checkpoint(self, scheduler) -> Path:
        """Atomic: accelerate writes model/optimizer/RNG into a temporary directory, the main process
        adds the trainer state last and renames the directory into place. (Not `lyrics.atomic`'s
        `atomic_directory`: every rank writes into the directory, so its name must be known to all of
        them, and only the main process may rename it.)"""
        acc = self.accelerator
        root = self.output_dir / "checkpoints"
        final = root / f"step-{self.state.step}"
        tmp = root / f".tmp-step-{self.state.step}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            self.state.scheduler = scheduler.state_dict()
            (tmp / STATE_FILE).write_text(json.dumps(asdict(self.state), indent=2))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in self.checkpoints()[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def _load_checkpoint(self, path: Path, scheduler) -> None:
        from accelerate.utils import DistributedType

        # Checkpoints hold the trainable weights only (non-strict load); DeepSpeed's engine saves and
        # loads its own whole state and names the switch differently.
        deepspeed = self.accelerator.distributed_type == DistributedType.DEEPSPEED
        self.accelerator.load_state(str(path), **({"load_module_strict": False} if deepspeed else {"strict": False}))
        data = json.loads((path / STATE_FILE).read_text())
        self.state = TrainerState(**data)
        scheduler.load_state_dict(self.state.scheduler)

    # --- logging -------------------------------------------------------------------------------
    # Two logs: `train.jsonl` holds only what the run computes (step, epoch, lr, losses), so two runs
    # of one seed write it byte for byte alike; `timing.jsonl` holds the wall-clock fields.
    LOGS = (LOG_FILE, TIMING_FILE)

    def _log(self, record: dict[str, Any], timing: dict[str, Any]) -> None:
        if not self.accelerator.is_main_process:
            return
        log_dir = self.output_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        for name, row in ((LOG_FILE, record), (TIMING_FILE, {"step": record["step"], **timing})):
            with open(log_dir / name, "a") as handle:
                handle.write(json.dumps(row) + "\n")
        if self.config.tensorboard:
            scalars = {k: v for k, v in {**record, **timing}.items() if isinstance(v, (int, float))}
            self.accelerator.log(scalars, step=record.get("step"))

    def _truncate_logs(self, step: int) -> None:
        """Drop the lines logged after `step` (the checkpoint this run resumes from; 0 when it starts
        afresh), which a killed run wrote: a resumed run's logs then equal an uninterrupted run's
        (each line is rewritten whole, atomically)."""
        from lyrics.atomic import atomic_write_text

        if not self.accelerator.is_main_process:
            return
        for name in self.LOGS:
            path = self.output_dir / "logs" / name
            if not path.is_file():
                continue
            lines = path.read_text().splitlines()
            kept = []
            for line in lines:
                try:
                    if json.loads(line)["step"] <= step:
                        kept.append(line)
                except (json.JSONDecodeError, KeyError, TypeError):
                    pass  # a line torn by the kill
            if kept != lines:
                atomic_write_text(path, "".join(line + "\n" for line in kept))

    def _collect(self, output: Any, window: dict[str, list[torch.Tensor]]) -> None:
        """Keep one micro-batch's loss and log fields (detached) for the next log line."""
        for name in ("loss", *self.log_fields):
            value = getattr(output, name, None)
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                window.setdefault(name, []).append(value.detach().float().reshape(()))

    def _means(self, window: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        """Each field's mean over the window's micro-batches on every rank: one all-reduce of
        (sum, count) per field, so a field that one rank lacks (no masked object to predict, say)
        neither deadlocks the reduction nor biases the mean."""
        names = ("loss", *self.log_fields)
        device = self.accelerator.device
        totals = torch.zeros(2 * len(names), device=device)
        for i, name in enumerate(names):
            values = window.get(name, [])
            if values:
                totals[i] = torch.stack(values).sum().to(device)
                totals[len(names) + i] = len(values)
        totals = self.accelerator.reduce(totals, reduction="sum")
        counts = totals[len(names) :]
        return {name: float(totals[i] / counts[i]) for i, name in enumerate(names) if counts[i] > 0}

    # --- the loop ------------------------------------------------------------------------------
    def train(self, resume: bool | str | Path = False) -> TrainerState:
        cfg, acc = self.config, self.accelerator
        optimizer = self._optimizer()
        scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, int(cfg.warmup_ratio * cfg.max_steps), cfg.max_steps, min_lr_rate=cfg.min_lr_ratio
        )
        # The scheduler is stepped by hand once per optimizer step (accelerate would step it once per
        # process), so the schedule is the same on 1 or 64 GPUs.
        _configure_deepspeed(acc, cfg.batch_size, cfg.gradient_accumulation_steps)
        self.model, optimizer = acc.prepare(self.model, optimizer)
        trainable = self._trainable_names()

        def keep_trainable(models, weights, _dir):
            # Checkpoints hold what training changes; the frozen parts come from their own checkpoints.
            for state in weights:
                for key in [k for k in state if k not in trainable]:
                    del state[key]

        hook = acc.register_save_state_pre_hook(keep_trainable)
        if resume:
            found = [Path(resume)] if isinstance(resume, (str, Path)) and not isinstance(resume, bool) else self.checkpoints()[-1:]
            if found:
                self._load_checkpoint(found[-1], scheduler)
                acc.print(f"resumed from {found[-1]} at step {self.state.step}")
        # Lines after the step this run starts from belong to a killed run: all of them when it
        # starts afresh in an old output_dir, so a log never mixes two runs.
        self._truncate_logs(self.state.step)
        if cfg.tensorboard:
            acc.init_trackers("lyrics")
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "trainer_config.json").write_text(json.dumps(asdict(cfg), indent=2))

        progress = self._progress()
        self.model.train()
        started, window_samples = time.perf_counter(), 0
        window: dict[str, list[torch.Tensor]] = {}
        while self.state.step < cfg.max_steps:
            if self.on_epoch is not None:
                self.on_epoch(self.state.epoch)
            loader = self._loader(self.state.epoch, self.state.batch_in_epoch)
            for batch in loader:
                batch = send_to_device(batch, acc.device)
                with acc.accumulate(self.model):
                    output = self.step_fn(self.model, batch)
                    self._collect(output, window)
                    acc.backward(output.loss)
                    if acc.sync_gradients and cfg.max_grad_norm:
                        acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                self.state.batch_in_epoch += 1
                window_samples += cfg.batch_size * acc.num_processes
                if not acc.sync_gradients:
                    continue
                scheduler.step()
                self.state.step += 1
                self.state.samples += cfg.batch_size * acc.num_processes * cfg.gradient_accumulation_steps
                if progress is not None:
                    progress.update(progress.task_ids[0], completed=self.state.step)
                if self.state.step % cfg.log_every == 0 or self.state.step == cfg.max_steps:
                    elapsed = time.perf_counter() - started
                    record = {"step": self.state.step, "epoch": self.state.epoch, "lr": scheduler.get_last_lr()[0]}
                    record.update(self._means(window))
                    window = {}
                    timing = {"samples_per_second": window_samples / max(elapsed, 1e-9), "seconds": elapsed}
                    self._log(record, timing)
                    started, window_samples = time.perf_counter(), 0
                if cfg.save_every and self.state.step % cfg.save_every == 0:
                    self.save_checkpoint(scheduler)
                if self.state.step >= cfg.max_steps:
                    break
            else:
                self.state.epoch += 1
                self.state.batch_in_epoch = 0
        if progress is not None:
            progress.stop()
        hook.remove()
        return self.state

    def _progress(self):
        if not (self.config.progress and self.accelerator.is_main_process):
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False)
        progress.add_task("train", total=self.config.max_steps, completed=self.state.step)
        progress.start()
        return progress

    def unwrapped_model(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model's weights under the unwrapped model's names, gathered from every rank where
        FSDP or ZeRO-3 shard them. Collective: every rank calls it; the main process gets the
        weights (other ranks may get an empty dict) and writes them."""
        return self.accelerator.get_state_dict(self.model)

    def cleanup(self) -> None:
        """Tear down cleanly: with DDP on CPU a process can abort at exit unless the wrapped model and
        optimizer are released and the process group destroyed after a barrier (docs/design.md, "Multi-process runs on CPU")."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if self.config.tensorboard:
            acc.end_training()
        self.model = acc.unwrap_model(self.model)
        acc.free_memory()
        gc.collect()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
