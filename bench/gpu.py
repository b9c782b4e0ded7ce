"""One-GPU check of the paper-size model, in one command (under 8 minutes on one H100).

    python bench/gpu.py                         # one GPU: paper preset, random weights, bf16
    python bench/gpu.py --device cpu --tiny     # smoke mode: the same sections at tiny widths (CI)

Prints, from one run (it asserts nothing):
  * matmul peak - the GPU's bf16 TFLOP/s, measured now with a loop of 8192^3 torch.matmul; every MFU
    below is model FLOPs per second divided by this measured peak (not the datasheet's);
  * stage 1 - `LyricsForPretraining` of the `paper` preset (MQ-Former, all four objectives) fed by the
    frozen CLIP ViT-L/14 in bf16, trainable weights in fp32 under bf16 autocast (the trainer's
    `mixed_precision: bf16`), per-GPU batch 32 (the paper's 512 over 16 GPUs): step time, samples/s,
    MFU, peak memory, and the paper's 600k steps at this step time on 16 such GPUs;
  * stage 2 - `LyricsForConditionalGeneration` with a Vicuna-13B-shaped LLaMA in bf16 and LoRA
    (r=96 on W_q, W_v), MQ-Former and projection trained, per-GPU batch 4 (64 over 16) of 512 tokens
    with 128 response tokens: the same (aim: MFU >= 0.40). If the step runs out of memory it is
    measured again with activation checkpointing (the stage-2 config's setting), which says so;
  * generation - greedy tokens/s of our model (LoRA merged) against transformers'
    `Blip2ForConditionalGeneration` with a ViT-L/14-sized vision tower, BERT-base Q-Former (32
    queries) and the very same LLM object (shared weights), both under bf16 autocast;
  * end to end - the `tiny` preset through the real recipes (`lyrics.recipes.run` with config dicts):
    refiner store -> stage 1 -> stage 2 -> `generate`, a few steps each, on the device;
  * serve vs vLLM - bench/serve.py's side-by-side comparison on the device: `lyrics serve` and vLLM
    (the Lyrics plugin) one after the other on one merged folder (--serve-model, or else the tiny
    vLLM-servable checkpoint tests/serving_vllm/checkpoint.py builds: framework overhead, not a real
    model's speed), greedy image chats at 1, 8 and 32 concurrent requests: requests/s, completion
    tokens/s, p50 / p95 latency. vLLM comes from --vllm-python (a CUDA build of vllm==0.32.0 in its
    own environment on a GPU); without one only `lyrics serve` is measured and the reason is printed.

FLOPs per step come from `lyrics.audit` (the counting of `lyrics audit --flops`: matmul and attention
FLOPs of the real modules' forward and backward counted on the meta device; frozen parts forward
only; full attention; activation recomputation not counted). Random weights: numbers of speed, not
of quality. Written 2026-12-05 (the serving comparison 2026-12-07) and not yet run on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, iters: int, warmup: int = 1) -> float:
    """Median seconds of `fn()` over `iters` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float:
    """Peak allocated GPU memory since `reset_peak`; on CPU the process's peak resident memory."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def free(device: str) -> None:
    """Return the memory of objects the caller has dropped."""
    import gc

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


class Setup:
    """Shapes and precision of one run: the paper preset on a GPU, or tiny widths (`--tiny`)."""

    def __init__(self, args):
        from lyrics.audit import Workload, with_image_token
        from lyrics.presets import load_config

        self.device, self.tiny = args.device, args.tiny
        self.config = with_image_token(load_config("tiny" if args.tiny else "paper"))
        self.workload = Workload().fitted(self.config)
        self.bf16 = self.device.startswith("cuda")  # CPUs here lack bf16 instructions: fp32 there
        self.dtype = torch.bfloat16 if self.bf16 else torch.float32
        self.iters = args.iters or (2 if args.tiny else 10)
        self.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 2)
        self.batch1 = args.batch1 or (2 if args.tiny else 32)
        self.batch2 = args.batch2 or (2 if args.tiny else 4)
        self.gen_batch = args.gen_batch or (2 if args.tiny else 8)
        self.gen_tokens = args.gen_tokens or (16 if args.tiny else 128)
        self.matmul_size = 256 if args.tiny and not self.bf16 else 8192

    def autocast(self):
        return torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16, enabled=self.bf16)

    def build(self, cls, *args, dtype=None):
        """`cls(*args)` built directly on the device in `dtype` (no full-size copy on the CPU)."""
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype or torch.float32)
        try:
            with torch.device(self.device):
                return cls(*args)
        finally:
            torch.set_default_dtype(previous)


# --- sections ----------------------------------------------------------------------------------------


def matmul_peak(setup: Setup) -> float:
    """FLOP/s of a loop of square matmuls in the run's precision (bf16 on a GPU)."""
    n = setup.matmul_size
    a = torch.randn(n, n, device=setup.device, dtype=setup.dtype)
    b = torch.randn(n, n, device=setup.device, dtype=setup.dtype)
    loops = 50 if setup.device.startswith("cuda") else 5

    def run():
        for _ in range(loops):
            torch.matmul(a, b)

    seconds = timed(run, setup.device, iters=3, warmup=1)
    peak = 2 * n**3 * loops / seconds
    print(f"{setup.dtype} matmul {n}^3 x {loops}: {peak / 1e12:.1f} TFLOP/s ({torch.cuda.get_device_name() if setup.bf16 else 'cpu'})")
    return peak


def report(name: str, setup: Setup, seconds: float, batch: int, flops_per_step: int, peak: float, steps: int) -> dict:
    mfu = flops_per_step / seconds / peak
    days = steps * seconds / 86400
    print(
        f"{name}: {seconds * 1e3:.1f} ms/step, {batch / seconds:.1f} samples/s, {flops_per_step / 1e12:.2f} TFLOP/step, "
        f"{flops_per_step / seconds / 1e12:.1f} TFLOP/s, MFU {mfu:.2f} of the measured peak; peak memory {peak_gib(setup.device):.1f} GiB"
    )
    print(f"{name}: the paper's {steps:,} steps at this step time on 16 such GPUs (per-GPU batch {batch}): {days:.1f} days")
    return {"seconds": seconds, "samples_per_s": batch / seconds, "mfu": mfu, "peak_gib": peak_gib(setup.device)}


def stage1(setup: Setup, peak: float) -> dict:
    from lyrics.audit import PAPER_SCHEDULE, stage1_flops, stage1_inputs
    from lyrics.models.image_encoder import ImageEncoder
    from lyrics.models.pretraining import LyricsForPretraining

    config, batch = setup.config, setup.batch1
    flops = sum(stage1_flops(config, setup.workload, batch))
    reset_peak(setup.device)
    encoder = setup.build(ImageEncoder, config.vision_config, config.vision_feature_layer, dtype=setup.dtype).eval().requires_grad_(False)
    model = setup.build(LyricsForPretraining, config).train()
    inputs = stage1_inputs(config, setup.workload, batch, setup.device)
    pixel_values = inputs.pop("pixel_values").to(setup.dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=setup.device.startswith("cuda"))

    def step():
        with setup.autocast():
            with torch.no_grad():
                embeds = encoder(pixel_values)
            loss = model(image_embeds=embeds, **inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = timed(step, setup.device, setup.iters, setup.warmup)
    w = setup.workload
    print(f"stage 1 (batch {batch}; {w.objects} objects, caption {w.caption_tokens} + spatial {w.spatial_tokens} tokens; image encoder included)")
    result = report("stage 1", setup, seconds, batch, flops, peak, PAPER_SCHEDULE["stage1"][0])
    del encoder, model, optimizer, inputs, pixel_values
    free(setup.device)
    return result


def build_stage2(setup: Setup):
    from lyrics.models.conditional_generation import LyricsForConditionalGeneration

    model = setup.build(LyricsForConditionalGeneration, setup.config, dtype=setup.dtype)
    for part in (model.mqformer, model.image_layernorm, model.language_projection):
        part.float()  # trained in fp32 under autocast, as `from_components` leaves them
    model.enable_lora()
    return model.train()


def stage2(setup: Setup, peak: float):
    """Returns (result, the stage-2 model) so generation reuses its LLM."""
    from lyrics.audit import PAPER_SCHEDULE, stage2_flops, stage2_inputs
    from lyrics.training.trainer import enable_activation_checkpointing

    config, batch = setup.config, setup.batch2
    flops = sum(stage2_flops(config, setup.workload, batch))
    reset_peak(setup.device)
    model = build_stage2(setup)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=setup.device.startswith("cuda"))
    inputs = stage2_inputs(config, setup.workload, batch, setup.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(setup.dtype)

    def step():
        with setup.autocast():
            loss = model(**inputs, response_logits_only=True).loss  # as the stage-2 recipe trains
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    note, seconds = "", None
    try:
        seconds = timed(step, setup.device, setup.iters, setup.warmup)
    except torch.OutOfMemoryError:
        pass  # retried below, once the exception no longer holds the failed step's tensors
    if seconds is None:
        optimizer.zero_grad(set_to_none=True)
        free(setup.device)
        enable_activation_checkpointing(model)
        reset_peak(setup.device)
        note = " (out of memory without it: activation checkpointing on, its recomputation not in the FLOPs)"
        seconds = timed(step, setup.device, setup.iters, setup.warmup)
    w = setup.workload
    trainable_m = sum(p.numel() for p in trainable) / 1e6
    print(
        f"stage 2 (batch {batch} x {w.llm_tokens} tokens, {w.response_tokens} with a loss; {config.text_config.num_hidden_layers}-layer "
        f"{config.text_config.hidden_size}-wide LLaMA in {setup.dtype}, LoRA r={config.lora_r}; {trainable_m:.3g}M trainable){note}"
    )
    result = report("stage 2", setup, seconds, batch, flops, peak, PAPER_SCHEDULE["stage2"][0])
    print(f"stage 2 MFU {result['mfu']:.2f} (aim >= 0.40)")
    del optimizer, inputs, trainable
    free(setup.device)
    return result, model


def blip2_like(setup: Setup, llm):
    """transformers' BLIP-2 with a ViT-L/14-sized tower and BERT-base Q-Former around `llm` (shared)."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    config = setup.config
    v = config.vision_config
    vision = dict(
        hidden_size=v.hidden_size, intermediate_size=v.intermediate_size, num_hidden_layers=v.num_hidden_layers,
        num_attention_heads=v.num_attention_heads, image_size=v.image_size, patch_size=v.patch_size,
    )  # fmt: skip
    mq = config.mqformer_config
    qformer = dict(
        hidden_size=mq.hidden_size, num_hidden_layers=mq.num_hidden_layers, num_attention_heads=mq.num_attention_heads,
        intermediate_size=mq.intermediate_size, encoder_hidden_size=v.hidden_size,
    )  # fmt: skip
    text = dict(config.text_config.to_dict(), num_hidden_layers=1)  # the real LLM is swapped in below
    blip2_config = Blip2Config(
        vision_config=vision, qformer_config=qformer, text_config=text,
        num_query_tokens=mq.num_query_tokens, image_token_index=config.image_token_index,
    )  # fmt: skip
    blip2 = setup.build(Blip2ForConditionalGeneration, blip2_config, dtype=setup.dtype)
    blip2.language_model = llm
    return blip2.eval()


def generation(setup: Setup, model) -> dict:
    from lyrics.audit import stage2_inputs

    config, batch, new = setup.config, setup.gen_batch, setup.gen_tokens
    model.language_model = model.language_model.merge_and_unload()  # as `lyrics merge` deploys it
    model.eval()
    prompt = 32
    workload = type(setup.workload)(**{**setup.workload.__dict__, "llm_tokens": config.num_image_tokens + prompt})
    ours = stage2_inputs(config, workload, batch, setup.device, labels=False)
    ours["pixel_values"] = ours["pixel_values"].to(setup.dtype)
    blip2 = blip2_like(setup, model.llm)
    queries = blip2.config.num_query_tokens
    theirs_ids = torch.cat([torch.full((batch, queries), config.image_token_index, device=setup.device), ours["input_ids"][:, -prompt:]], dim=1)
    theirs = dict(input_ids=theirs_ids, attention_mask=torch.ones_like(theirs_ids), pixel_values=ours["pixel_values"])
    greedy = dict(do_sample=False, max_new_tokens=new, min_new_tokens=new)
    results = {}
    for name, net, inputs in (("lyrics", model, ours), ("blip2", blip2, theirs)):

        def run(net=net, inputs=inputs):
            with setup.autocast(), torch.no_grad():
                out = net.generate(**inputs, **greedy)
            return out

        out = run()  # warm-up and a length check
        generated = out.shape[1] - (inputs["input_ids"].shape[1] if out.shape[1] > new else 0)
        seconds = timed(run, setup.device, iters=max(1, setup.iters // 3), warmup=0)
        results[name] = batch * new / seconds
        print(f"generation {name}: batch {batch}, prompt {inputs['input_ids'].shape[1]} tokens, {generated} new tokens: {results[name]:.1f} tokens/s")
    print(f"generation lyrics / blip2 tokens/s: {results['lyrics'] / results['blip2']:.2f} (same LLM weights; {config.num_image_tokens} vs {queries} visual tokens)")
    del blip2, ours, theirs
    free(setup.device)
    return results


def end_to_end(setup: Setup, root: Path) -> dict:
    """refine -> stage 1 -> convert -> stage 2 -> generate, tiny preset, real recipes (as tests/recipes)."""
    sys.path.insert(0, str(REPO / "tests"))
    import tiny
    from PIL import Image

    from lyrics.data.convert import convert_to_file
    from lyrics.models.conditional_generation import LyricsForConditionalGeneration
    from lyrics.models.processing import LyricsProcessor
    from lyrics.recipes import load_recipe_config, run
    from lyrics.refiner.store import open_store

    tiny.recipe_world(root)
    images = root / "images"

    trainer = {"max_steps": 3, "log_every": 1, "save_every": 0, "progress": False, "mixed_precision": "bf16" if setup.bf16 else "no"}
    start = time.perf_counter()
    final1 = run(load_recipe_config({
        "recipe": "stage1",
        "model": {"preset": "tiny", "overrides": {"refiner_config": {"tagger": "toy"}}, "mqformer_tokenizer": str(root / "mq_tokenizer"),
                  "vision_model": str(root / "vision")},
        "data": {"captions": str(root / "captions.json"), "images": str(images), "refiner_store": str(root / "store"),
                 "augment": {"enabled": True, "size": 32}},
        "trainer": dict(trainer, output_dir=str(root / "run1"), batch_size=4),
    }))  # fmt: skip
    convert_to_file("coco-captions", [root / "captions.json"], root / "records.json", images=images)
    final2 = run(load_recipe_config({
        "recipe": "stage2",
        "model": {"preset": str(final1), "text_model": str(root / "llm"), "vision_model": str(root / "vision"), "stage1": str(final1)},
        "data": {"records": str(root / "records.json"), "images": str(images), "refiner_store": str(root / "store")},
        "trainer": dict(trainer, output_dir=str(root / "run2"), batch_size=2, lr=1e-3),
    }))  # fmt: skip
    losses = []
    for run_dir in ("run1", "run2"):
        log = [json.loads(line) for line in (root / run_dir / "logs" / "train.jsonl").read_text().splitlines()]
        losses.append([round(r["loss"], 3) for r in log])

    model = LyricsForConditionalGeneration.from_pretrained(final2).to(setup.device)
    proc = LyricsProcessor.from_pretrained(final2)
    record = open_store(root / "store").get("000.png")
    batch = proc.generation_batch([[{"from": "human", "value": "<image>\nWrite a short description for the image."}]])
    visual = dict(
        pixel_values=proc.pixel_values([Image.open(images / "000.png").convert("RGB")]),
        local_features=record.local_features[None].float(),
    )
    inputs = {k: v.to(setup.device) for k, v in {**batch, **visual}.items() if isinstance(v, torch.Tensor)}
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    text = proc.tokenizer.decode(out[0], skip_special_tokens=True)
    seconds = time.perf_counter() - start
    device = next(model.parameters()).device
    print(f"end to end: stage 1 losses {losses[0]}, stage 2 losses {losses[1]} (trainer on {'cuda' if torch.cuda.is_available() else 'cpu'})")
    print(f"end to end: generate on {device}: {out.shape[1]} new tokens {text!r}; {seconds:.1f} s from stage 1 to the answer")
    return {"stage1_losses": losses[0], "stage2_losses": losses[1], "generated_tokens": int(out.shape[1]), "seconds": seconds}


def serving(setup: Setup, args, root: Path) -> dict:
    """bench/serve.py's `lyrics serve` / vLLM comparison on the device (its table printed there)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_serve", REPO / "bench" / "serve.py")
    bench_serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_serve)
    folder = args.serve_model
    if folder is None:
        sys.path.insert(0, str(REPO / "tests"))
        from serving_vllm.checkpoint import build

        _, folder = build(root)
        print("serve: the tiny merged checkpoint of tests/serving_vllm (2-layer 64-wide LLaMA, SmolLM2 tokenizer, toy refiner)")
    cuda = setup.device.startswith("cuda")
    result = bench_serve.compare(
        folder, requests=args.serve_requests or (4 if setup.tiny else 64), max_tokens=8 if setup.tiny else 64,
        levels=(1, 4) if setup.tiny else bench_serve.LEVELS, device=setup.device, dtype="bfloat16" if setup.bf16 else "float32",
        vllm_python=args.vllm_python, vllm_args=["--gpu-memory-utilization", "0.8"] if cuda else [],
    )  # fmt: skip
    for server in result["servers"].values():
        for level in server["levels"].values():
            level.pop("answers")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default; full size) or cpu (only with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="tiny widths (the `tiny` preset) instead of the paper's; for smoke tests")
    parser.add_argument("--iters", type=int, default=None, help="timed steps per measurement (default 10; 2 with --tiny)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps before each measurement (default 2; 1 with --tiny)")
    parser.add_argument("--batch1", type=int, default=None, help="stage-1 per-GPU batch (default 32 = 512 / 16; 2 with --tiny)")
    parser.add_argument("--batch2", type=int, default=None, help="stage-2 per-GPU batch (default 4 = 64 / 16; 2 with --tiny)")
    parser.add_argument("--gen-batch", type=int, default=None, help="prompts per generate call (default 8; 2 with --tiny)")
    parser.add_argument("--gen-tokens", type=int, default=None, help="new tokens per prompt (default 128; 16 with --tiny)")
    parser.add_argument("--sections", default="stage1,stage2,generation,e2e,serve", help="comma-separated subset to run (the matmul peak always runs)")
    parser.add_argument("--serve-model", type=Path, default=None, help="merged Lyrics folder for the serve section (default: a tiny one it builds)")
    parser.add_argument("--serve-requests", type=int, default=None, help="requests per concurrency level in the serve section (default 64; 4 with --tiny)")
    parser.add_argument("--vllm-python", default=os.environ.get("LYRICS_VLLM_PYTHON", str(REPO / ".venv-vllm" / "bin" / "python")),
                        help="python of a vLLM environment for the serve section (default $LYRICS_VLLM_PYTHON or .venv-vllm/bin/python)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the recipes' trainer picks the GPU whenever one is visible
        if not args.tiny:
            parser.error("full size is for a GPU (the 13B LLM alone is 26 GB in bf16); use --device cpu with --tiny")
    elif not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no GPU visible; use --device cpu --tiny for the smoke mode")
    wanted = set(args.sections.split(","))
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    setup = Setup(args)
    print(f"bench/gpu.py: {'tiny' if setup.tiny else 'paper'} preset on {setup.device}, torch {torch.__version__}")
    results: dict = {}
    section("matmul peak")
    peak = matmul_peak(setup)
    results["matmul_tflops"] = peak / 1e12
    if "stage1" in wanted:
        section("stage 1")
        results["stage1"] = stage1(setup, peak)
    model = None
    if "stage2" in wanted or "generation" in wanted:
        section("stage 2")
        results["stage2"], model = stage2(setup, peak)
    if "generation" in wanted:
        section("generation")
        results["generation"] = generation(setup, model)
    model = None
    free(setup.device)
    if "e2e" in wanted:
        section("end to end")
        with tempfile.TemporaryDirectory(prefix="lyrics-bench-") as tmp:
            results["end_to_end"] = end_to_end(setup, Path(tmp))
    if "serve" in wanted:
        section("serve vs vLLM")
        with tempfile.TemporaryDirectory(prefix="lyrics-bench-") as tmp:
            results["serve"] = serving(setup, args, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print("\ndone", flush=True)


if __name__ == "__main__":
    main()
