"""Evaluation throughput of a quickstart checkpoint: plain `generate` against answers from a shared
prompt prefix (`lyrics.inference.prefix_cache`), side by side in one run.

The toy world's test split asks several questions about each image (VQA, REC, POPE's three
samplings); with `share_prefix` the image tokens and spatial text they share go through the LLM once
per image instead of once per question. For each precision (fp32, and bfloat16 autocast where the
CPU has AMX or AVX512-BF16; `--precision` forces a list) and each mode this prints the questions
answered per second over the quickstart's own benchmarks and the ratio shared / plain, and counts
the answers that differ between the two modes (greedy answers should be identical; a difference
means two logits tied within rounding).

Usage: python bench/eval.py --run runs/quickstart [--limit 60] [--tasks vqa,rec,pope_random]
                            [--precision fp32,bf16] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def quickstart(run: Path):
    """The finished quickstart run in `run`, rebuilt from its quickstart.json (no stage reruns)."""
    from lyrics.toyworld.quickstart import Budget, CanonicalKeys, Quickstart
    from lyrics.toyworld.world import WorldSizes

    summary = json.loads((run / "quickstart.json").read_text())
    fields = dict(summary["budget"])
    budget = Budget(world=WorldSizes(**fields.pop("world")), **fields)
    q = Quickstart(run, budget, seed=summary["seed"], log=lambda _: None)
    q.keys = CanonicalKeys(json.loads((q.world / "world.json").read_text()))
    return q


def measure(q, checkpoint: Path, tasks: list[str], limit: int, autocast, share: bool) -> tuple[float, dict[str, str]]:
    """Seconds to answer every distinct prompt of `tasks` on the test split, and the answers."""
    from lyrics.eval.predictor import LyricsPredictor
    from lyrics.eval.runner import EvalConfig, run_eval
    from lyrics.toyworld.results import RepeatedPrompts, _benchmarks

    model = LyricsPredictor.from_pretrained(checkpoint, refiner_store=q.store_dir, autocast=autocast, max_batch=32, share_prefix=share)
    model.store_key = q.keys
    predictor = RepeatedPrompts(model)
    rows = [r for r in _benchmarks(q.world, "test") if r[0] in tasks]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for task, benchmark, data, split, images in rows:
            config = EvalConfig(benchmark=benchmark, data=data, split=split, images=images, limit=limit, batch_size=q.budget.eval_batch, out=Path(tmp) / task, model=str(checkpoint))
            run_eval(predictor, config)
        seconds = time.perf_counter() - start
    return seconds, {k: a.text for k, a in predictor.answers.items()}


def main() -> None:
    from lyrics.toyworld.quickstart import cpu_has_fast_bf16

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/quickstart"), help="a finished `lyrics quickstart` folder")
    parser.add_argument("--limit", type=int, default=60, help="samples per benchmark")
    parser.add_argument("--tasks", default="vqa,rec,pope_random,pope_popular,pope_adversarial")
    parser.add_argument("--precision", default=None, help="fp32,bf16 (default: bf16 only where the CPU has it natively)")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = args.precision.split(",") if args.precision else ["fp32"] + (["bf16"] if cpu_has_fast_bf16() else [])
    q = quickstart(args.run.resolve())
    checkpoint = q.out / "stage2" / "final"
    tasks = args.tasks.split(",")
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, native bf16: {cpu_has_fast_bf16()}; {checkpoint}; "
          f"test split, {', '.join(tasks)}, {args.limit} samples each")  # fmt: skip
    for precision in precisions:
        autocast = torch.bfloat16 if precision == "bf16" else None
        plain_s, plain = measure(q, checkpoint, tasks, args.limit, autocast, share=False)
        shared_s, shared = measure(q, checkpoint, tasks, args.limit, autocast, share=True)
        n = len(plain)
        differ = sum(plain[k] != shared.get(k) for k in plain)
        print(
            f"{precision}: {n} distinct questions; plain {n / plain_s:.2f} questions/s ({plain_s:.1f} s), "
            f"shared prefix {n / shared_s:.2f} questions/s ({shared_s:.1f} s): {plain_s / shared_s:.2f}x; "
            f"{differ} answers differ"
        )


if __name__ == "__main__":
    main()
