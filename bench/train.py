"""Training-step throughput, measured side by side in one run.

Prints:
  * stage 1 (LyricsForPretraining, all four objectives) at the paper's MQ-Former dims with cached
    image features: samples/s, achieved FLOP/s (torch.utils.flop_counter) divided by the fp32 matmul
    FLOP/s measured in the same run (aim >= 0.5), and peak memory;
  * stage 2 (LyricsForConditionalGeneration with LoRA) on a small LLaMA with Vicuna's 32k vocabulary:
    steps/s and peak memory with the output layer computed at the response positions only (the
    (`response_logits_only=True`, what training asks for) and at every position, and their ratio;
  * with `--llm DIR` (e.g. the quickstart's converted SmolLM2, `runs/quickstart/llm`), stage 2 on that
    LLM in fp32 and under bfloat16 autocast (the quickstart's `precision="auto"` on a CPU with AMX or
    AVX512-BF16), and the ratio of their steps/s.

Each measurement runs in its own process so that peak resident memory belongs to it alone.
Usage: python bench/train.py [--batch 8] [--iters 3] [--stages 1,2] [--llm runs/quickstart/llm]
       (`--stages 0 --llm DIR` measures the fp32 / bf16 comparison alone)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


def matmul_flops(size: int = 2048) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    return 2 * size**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage1(batch: int, iters: int, queue) -> None:
    from lyrics.models.pretraining import LyricsForPretraining
    from lyrics.presets import load_config
    from lyrics.refiner.record import RefinedObject, RefinerRecord
    from lyrics.tokenization import prepare_mqformer_tokenizer
    from lyrics.training.collate import PretrainingCollator, PretrainingExample
    from transformers import BertTokenizerFast

    torch.manual_seed(0)
    config = load_config("paper")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "circle", "on", "the", "table", *"(),", *map(str, range(1000))]
    path = Path("/tmp/lyrics-bench-vocab.txt")
    path.write_text("\n".join(vocab))
    tokenizer = prepare_mqformer_tokenizer(BertTokenizerFast(vocab_file=str(path)))
    model = LyricsForPretraining(config).train()
    collator = PretrainingCollator(tokenizer, config)
    g = torch.Generator().manual_seed(0)

    def example(i: int) -> PretrainingExample:
        objects = [RefinedObject("red circle", 0.9, (0, 0, 10, 10), (0.1 * (k % 8), 0.1, 0.2, 0.3)) for k in range(100)]
        record = RefinerRecord(f"{i}", 224, 224, ["red circle"], objects, "", torch.randn(100, 516, generator=g))
        caption = " ".join(["a red circle on the table"] * 4)
        return PretrainingExample(caption=caption, record=record, image_embeds=torch.randn(257, 1024, generator=g), index=i)

    data = collator([example(i) for i in range(batch)])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(**data).loss.backward()
        optimizer.step()

    step()
    with FlopCounterMode(display=False) as counter:
        model(**data).loss.backward()
    flops = counter.get_total_flops()
    times = [_timed(step) for _ in range(iters)]
    seconds = statistics.median(times)
    queue.put({"samples_per_s": batch / seconds, "flops": flops, "seconds": seconds, "peak_mb": _peak_mb(), "spatial_tokens": data["spatial_ids"].shape[1]})


def stage2(batch: int, iters: int, keep_all_logits: bool, llm_dir: str | None, bf16: bool, queue) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import tempfile

    import tiny
    from lyrics.models.conditional_generation import LyricsForConditionalGeneration
    from lyrics.models.processing import LyricsProcessor, ProcessorConfig
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = tiny.lyrics_config()
    if llm_dir is None:
        root = Path(tempfile.mkdtemp())
        tokenizer = tiny.llm_tokenizer()
        llm = LlamaConfig(
            vocab_size=32000, hidden_size=256, intermediate_size=688, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        LlamaForCausalLM(llm).save_pretrained(str(root / "llm"))
        tokenizer.save_pretrained(str(root / "llm"))
        llm_dir = str(root / "llm")
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    proc = LyricsProcessor(tokenizer, ProcessorConfig(num_image_tokens=config.num_image_tokens, max_length=1024))
    model = LyricsForConditionalGeneration.from_components(config, llm_dir, processor=proc)
    model.enable_lora()
    model.train()
    # A VQA-like sample: a long prompt (the spatial text of a few objects) and a short answer.
    question = "<image>\n" + " ".join(["a red circle at (0.10,0.20),(0.30,0.40)"] * 12) + " what color is the circle?"
    conv = [{"from": "human", "value": question}, {"from": "gpt", "value": "red"}]
    data = proc.training_batch([conv] * batch)
    data["image_embeds"] = torch.randn(batch, 17, 32)
    data["local_features"] = torch.randn(batch, 5, config.mqformer_config.local_feature_size)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**data, response_logits_only=not keep_all_logits).loss
        loss.backward()
        optimizer.step()

    step()
    seconds = statistics.median(_timed(step) for _ in range(iters))
    tokens = data["input_ids"].shape[1]
    queue.put({"steps_per_s": 1 / seconds, "samples_per_s": batch / seconds, "peak_mb": _peak_mb(), "tokens": tokens})


def run(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--stages", default="1,2", help="which stages to measure, e.g. 2")
    parser.add_argument("--llm", default=None, help="a transformers LLM folder: also compare fp32 and bf16 autocast on it")
    args = parser.parse_args()
    if "1" in args.stages.split(","):
        measure_stage1(args)
    if "2" in args.stages.split(","):
        measure_stage2(args)
    if args.llm:
        measure_precision(args)


def measure_stage1(args) -> None:
    peak = matmul_flops()
    print(f"threads: {torch.get_num_threads()}, fp32 matmul (2048^3): {peak / 1e9:.1f} GFLOP/s")
    s1 = run(stage1, args.batch, args.iters)
    achieved = s1["flops"] / s1["seconds"]
    print(
        f"stage 1 (paper MQ-Former dims, cached features, batch {args.batch}, 100 objects, "
        f"{s1['spatial_tokens']} spatial tokens): {s1['samples_per_s']:.2f} samples/s, "
        f"{s1['flops'] / 1e9:.0f} GFLOP/step, {achieved / 1e9:.1f} GFLOP/s"
    )
    print(f"stage 1 achieved / matmul FLOP/s: {achieved / peak:.2f}  (aim >= 0.5); peak memory {s1['peak_mb']:.0f} MB")


def measure_stage2(args) -> None:
    results = {}
    for keep_all in (False, True):
        s2 = results[keep_all] = run(stage2, args.batch, args.iters, keep_all, None, False)
        where = "every position" if keep_all else "response positions"
        print(
            f"stage 2 (2-layer LLaMA, 32k vocab, LoRA, batch {args.batch} x {s2['tokens']} tokens), logits at {where}: "
            f"{s2['steps_per_s']:.2f} steps/s; peak memory {s2['peak_mb']:.0f} MB"
        )
    sliced, full = results[False], results[True]
    print(f"stage 2 response-only / every-position logits: {sliced['steps_per_s'] / full['steps_per_s']:.2f}x steps/s, {sliced['peak_mb'] / full['peak_mb']:.2f}x peak memory")


def measure_precision(args) -> None:
    from lyrics.toyworld.quickstart import cpu_has_fast_bf16

    results = {}
    for bf16 in (False, True):
        s2 = results[bf16] = run(stage2, args.batch, args.iters, False, args.llm, bf16)
        print(
            f"stage 2 ({args.llm}, LoRA, batch {args.batch} x {s2['tokens']} tokens), {'bf16 autocast' if bf16 else 'fp32'}: "
            f"{s2['steps_per_s']:.3f} steps/s; peak memory {s2['peak_mb']:.0f} MB"
        )
    print(f"stage 2 bf16 autocast / fp32: {results[True]['steps_per_s'] / results[False]['steps_per_s']:.2f}x steps/s "
          f"(this CPU {'has' if cpu_has_fast_bf16() else 'lacks'} bfloat16 instructions)")


if __name__ == "__main__":
    main()
