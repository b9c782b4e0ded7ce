"""Quantised inference on the quickstart checkpoint: the unquantised model against int8, side by side
in one run (`--quantize int8`, lyrics.inference.quantize).

Each variant runs in a process of its own, so that its peak memory is its own: `none`; `int8` (the
LLM's Linear layers int8 weight-only through torchao, LoRA merged first: what `--quantize int8`
does); with `--mqformer`, also `int8+mqformer` (the MQ-Former's Linear layers too); with
`--group-size N`, also `int8/gN` (one scale per N input columns, torchao's PerGroup). Each loads the
stage-2 checkpoint as the quickstart's evaluation does (refiner store, shared prefix, batches of 32)
and measures:

* weight memory: the model's parameters and buffers (`weight_bytes`), and the LLM's alone;
* peak RSS of the process (it includes the fp32 weights, which are loaded and then quantised) and
  its RSS once loaded and quantised;
* generation tokens/s: greedy answers of exactly `--new-tokens` tokens to one image prompt, at
  batch 1 and 8 (prompt encoding included; the faster of two runs);
* the toy test split's metrics through `lyrics eval`'s runner and scorers: POPE F1 (random, popular,
  adversarial), REC Acc@0.5, VQA accuracy and its colour questions, and questions answered per second;
  `--tasks vqa_color` evaluates the split's colour questions alone (360 of them, with `--limit 360`).

Then one table with the differences, and the CPU (lscpu's model name, AVX512-BF16 and AMX flags).
A variant's numbers on a shared machine move with the load; compare within one run.

With several `--run` folders (one quickstart per seed), each is measured in turn and a last table
gives each quantised variant's metric differences from `none` per seed and their mean.

Usage: python bench/quantize.py [--run runs/quickstart [RUN ...]] [--limit 60] [--tasks ...] [--threads 0]
                                [--new-tokens 32] [--precision fp32|bf16] [--mqformer] [--group-size N ...]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TASKS = "pope_random,pope_popular,pope_adversarial,rec,vqa"
# variant -> (method, MQ-Former too, torchao group size); `--group-size N` adds "int8/gN"
VARIANTS = {"none": ("none", False, None), "int8": ("int8", False, None), "int8+mqformer": ("int8", True, None)}


def variant_spec(name: str) -> tuple[str, bool, int | None]:
    if name in VARIANTS:
        return VARIANTS[name]
    if name.startswith("int8/g") and name[6:].isdigit():
        return "int8", False, int(name[6:])
    raise ValueError(f"unknown variant {name!r}")


def cpu_description() -> str:
    """lscpu's model name and the bf16 / AMX instructions the CPU has (they decide CPU matmul speed)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name")), "unknown CPU")
    except OSError:
        name = "unknown CPU"
    try:
        flags = set(re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1).split())
    except (OSError, AttributeError):
        flags = set()
    have = {flag: flag in flags for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")}
    return f"{name} (" + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in have.items()) + ")"


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def generation_rate(predictor, image: Path, batch: int, new_tokens: int) -> float:
    """Tokens per second of greedy generation of exactly `new_tokens` tokens per row for `batch`
    copies of one image prompt, through the generation layer evaluation uses (the faster of two
    runs: the first also warms the caches)."""
    from lyrics.eval.predictor import Prompt
    from lyrics.inference.generation import Row

    prompt = Prompt([{"from": "human", "value": "<image>\nDescribe the image in detail."}], [image], new_tokens)
    key = str(image)
    images = {key: predictor._load(image)[0]}
    records = predictor._records([key], images)
    row = Row(predictor._encode(prompt, [key], records), [images[key]], [records[key]], predictor.generator.instructions(prompt.turns))
    generator = predictor.generator
    inputs = generator.model_inputs([row] * batch)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        with torch.inference_mode(), generator.autocast_context():
            out = generator.model.generate(
                **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, num_beams=1,
                temperature=None, top_p=None, top_k=None,
            )  # fmt: skip
        best = min(best, time.perf_counter() - start)
        assert out.shape == (batch, new_tokens), out.shape
    return batch * new_tokens / best


def child(args: argparse.Namespace) -> None:
    """Measure one variant and write its numbers as JSON to `args.json`."""
    from eval import quickstart  # bench/eval.py: the finished quickstart run, rebuilt from quickstart.json

    from lyrics.eval.predictor import LyricsPredictor
    from lyrics.eval.runner import EvalConfig, run_eval
    from lyrics.inference.quantize import quantize_model, weight_bytes
    from lyrics.toyworld.results import RepeatedPrompts, _benchmarks, select_metrics, vqa_by_question_type

    if args.threads:
        torch.set_num_threads(args.threads)
    method, mqformer, group_size = variant_spec(args.child)
    q = quickstart(args.child_run.resolve())
    checkpoint = q.out / "stage2" / "final"
    autocast = torch.bfloat16 if args.precision == "bf16" else None
    start = time.perf_counter()
    model = LyricsPredictor.from_pretrained(checkpoint, refiner_store=q.store_dir, autocast=autocast, max_batch=32, share_prefix=True)
    report = quantize_model(model.model, method, mqformer=mqformer, group_size=group_size)  # what `quantize=` does after the LoRA merge
    load_s = time.perf_counter() - start
    model.store_key = q.keys
    out = {
        "variant": args.child, "layers": report.layers, "load_s": load_s, "rss_loaded": rss_bytes(),
        "weights": weight_bytes(model.model), "llm_weights": weight_bytes(model.model.llm),
        "mqformer_weights": weight_bytes(model.model.mqformer),
    }  # fmt: skip
    image = next(iter(sorted((q.world / "images" / "toytest").glob("*.jpg"))))
    out["tokens_s_b1"] = generation_rate(model, image, 1, args.new_tokens)
    out["tokens_s_b8"] = generation_rate(model, image, 8, args.new_tokens)
    predictor = RepeatedPrompts(model)
    metrics: dict[str, float] = {}
    tasks = args.tasks.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        benchmarks = _benchmarks(q.world, "test")
        if "vqa_color" in tasks:  # VQA's colour questions alone: enough of them to tell a one-point shift
            benchmarks.append(("vqa_color", "vqav2", colour_questions(q.world / "vqav2", Path(tmp) / "vqa_color"), "toytest", q.world / "images"))
        for task, benchmark, data, split, images in [r for r in benchmarks if r[0] in tasks]:
            config = EvalConfig(benchmark=benchmark, data=data, split=split, images=images, limit=args.limit, batch_size=q.budget.eval_batch, out=Path(tmp) / task, model=str(checkpoint))
            outcome = run_eval(predictor, config)
            if task == "vqa_color":
                metrics["vqa_color/accuracy"] = select_metrics("vqa", outcome.results["metrics"])["accuracy"]
                continue
            for name, value in select_metrics(task, outcome.results["metrics"]).items():
                if name != "yes_ratio":
                    metrics[f"{task}/{name}"] = value
            if task == "vqa":
                metrics["vqa/color"] = vqa_by_question_type(outcome.run_dir, config, q.world)[0].get("color", float("nan"))
        out["eval_s"] = time.perf_counter() - start
    out["questions"] = len(predictor.answers)
    out["metrics"] = metrics
    out["answers"] = {k: a.text for k, a in predictor.answers.items()}
    out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(args.json).write_text(json.dumps(out))


def colour_questions(vqa: Path, out: Path) -> Path:
    """A copy of the toy VQA test files with only the colour questions (task `vqa_color`): at 150
    VQA samples a colour answer is ~3 points, too coarse for a one-point claim; the split has 360."""
    questions = json.loads((vqa / "v2_OpenEnded_mscoco_toytest_questions.json").read_text())
    annotations = json.loads((vqa / "v2_mscoco_toytest_annotations.json").read_text())
    annotations["annotations"] = [a for a in annotations["annotations"] if a.get("question_type") == "color"]
    keep = {a["question_id"] for a in annotations["annotations"]}
    questions["questions"] = [item for item in questions["questions"] if item["question_id"] in keep]
    out.mkdir(parents=True)
    (out / "v2_OpenEnded_mscoco_toytest_questions.json").write_text(json.dumps(questions))
    (out / "v2_mscoco_toytest_annotations.json").write_text(json.dumps(annotations))
    return out


def table(rows: list[dict]) -> str:
    """Markdown: one column per variant, the last ones with their difference from the first."""
    base = rows[0]
    mib = lambda v: f"{v / 2**20:.1f} MiB"  # noqa: E731
    lines = [
        ("weights (whole model)", "weights", mib), ("weights (LLM)", "llm_weights", mib), ("weights (MQ-Former)", "mqformer_weights", mib),
        ("RSS once loaded", "rss_loaded", mib), ("peak RSS", "peak_rss", mib),
        ("tokens/s, batch 1", "tokens_s_b1", lambda v: f"{v:.1f}"), ("tokens/s, batch 8", "tokens_s_b8", lambda v: f"{v:.1f}"),
        ("eval questions/s", "questions_s", lambda v: f"{v:.2f}"),
    ]  # fmt: skip
    for row in rows:
        row["questions_s"] = row["questions"] / row["eval_s"]
    head = "| | " + " | ".join(r["variant"] for r in rows) + " |"
    out = [head, "|" + "---|" * (len(rows) + 1)]
    for label, key, fmt in lines:
        cells = [fmt(base[key])] + [f"{fmt(r[key])} ({r[key] / base[key]:.2f}x)" if base[key] else fmt(r[key]) for r in rows[1:]]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    for name in base["metrics"]:
        cells = [f"{base['metrics'][name]:.2f}"] + [f"{r['metrics'][name]:.2f} ({r['metrics'][name] - base['metrics'][name]:+.2f})" for r in rows[1:]]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    for r in rows[1:]:
        differ = sum(r["answers"].get(k) != v for k, v in base["answers"].items())
        out.append(f"\n{r['variant']}: {r['layers']} Linear layers quantised; {differ} of {len(base['answers'])} answers differ from `none`")
    return "\n".join(out)


def seed_summary(runs: dict[str, list[dict]]) -> str:
    """Markdown: per metric and quantised variant, its difference from `none` on each run (seed) and
    their mean, and how many answers differ: the claim is made over seeds, not over one draw."""
    names = list(runs)
    first = runs[names[0]]
    head = "| metric | variant | " + " | ".join(Path(n).name for n in names) + " | mean |"
    out = [head, "|" + "---|" * (len(names) + 3)]
    for metric in first[0]["metrics"]:
        for k, row in enumerate(first[1:], start=1):
            deltas = [rows[k]["metrics"][metric] - rows[0]["metrics"][metric] for rows in runs.values()]
            cells = " | ".join(f"{d:+.2f}" for d in deltas)
            out.append(f"| {metric} | {row['variant']} | {cells} | {sum(deltas) / len(deltas):+.2f} |")
    for k, row in enumerate(first[1:], start=1):
        differ = [sum(rows[k]["answers"].get(a) != v for a, v in rows[0]["answers"].items()) for rows in runs.values()]
        total = [len(rows[0]["answers"]) for rows in runs.values()]
        out.append(f"| answers that differ | {row['variant']} | " + " | ".join(f"{d} / {t}" for d, t in zip(differ, total)) + " | |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, nargs="+", default=[Path("runs/quickstart")],
                        help="finished `lyrics quickstart` folders (several: one per seed, summarised together)")  # fmt: skip
    parser.add_argument("--limit", type=int, default=60, help="samples per benchmark")
    parser.add_argument("--tasks", default=TASKS)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per row for tokens/s")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast the matmuls (as the quickstart on AVX512-BF16/AMX CPUs)")
    parser.add_argument("--mqformer", action="store_true", help="also measure int8 of the MQ-Former's Linear layers")
    parser.add_argument("--group-size", type=int, action="append", default=[],
                        help="also measure int8 with one scale per this many input columns (torchao PerGroup); repeatable")  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if args.child:
        child(args)
        return
    for run in args.run:
        checkpoint = run / "stage2" / "final"
        if not (checkpoint / "config.json").is_file() or not (run / "quickstart.json").is_file():
            sys.exit(f"bench/quantize.py: no quickstart checkpoint at {checkpoint} (build it with `make demo`, or "
                     f"`lyrics quickstart --out DIR` and pass --run DIR)")  # fmt: skip
    variants = ["none", "int8"] + (["int8+mqformer"] if args.mqformer else []) + [f"int8/g{g}" for g in args.group_size]
    for name in variants:
        variant_spec(name)
    print(f"{time.strftime('%Y-%m-%d')}; {cpu_description()}; torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads, "
          f"{args.precision}; test split, {args.tasks}, {args.limit} samples each; {args.new_tokens} new tokens", flush=True)  # fmt: skip
    forwarded = ["--limit", str(args.limit), "--tasks", args.tasks, "--threads", str(args.threads), "--new-tokens", str(args.new_tokens),
                 "--precision", args.precision]  # fmt: skip
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r, run in enumerate(args.run):
            rows = runs.setdefault(str(run), [])
            for variant in variants:
                path = Path(tmp) / f"{r}-{variant.replace('/', '-')}.json"
                subprocess.run([sys.executable, __file__, *forwarded, "--child", variant, "--child-run", str(run), "--json", str(path)], check=True)
                rows.append(json.loads(path.read_text()))
                print(f"{run}: {variant}: done ({rows[-1]['load_s']:.1f} s to load, {rows[-1]['eval_s']:.1f} s to evaluate)", flush=True)
            print(f"\n{run / 'stage2' / 'final'}\n" + table(rows) + "\n", flush=True)
    if len(runs) > 1:
        print("Differences from `none`, per run:\n" + seed_summary(runs))


if __name__ == "__main__":
    main()
