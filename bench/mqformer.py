"""MQ-Former forward+backward at paper dims, measured side by side in one run.

Prints:
  * the machine's fp32 matmul FLOP/s (2048^3 matmuls), measured now;
  * the MQ-Former's achieved FLOP/s (FLOPs counted by torch.utils.flop_counter, divided by the
    measured time) and its ratio to the matmul FLOP/s (aim >= 0.6);
  * time of our MQ-Former with grounding off relative to transformers' Blip2QFormerModel on the same
    dims and inputs (aim <= 1.05).

Paper dims: batch 4, 32 visual + 32 grounding queries, 257 x 1024 image features, 100 objects x 516
local features, 96 text tokens, BERT-base. Usage: python bench/mqformer.py [--iters N] [--threads T]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from lyrics.configuration import MQFormerConfig
from lyrics.models.mqformer import MQFormerModel

BATCH, IMAGE_TOKENS, IMAGE_WIDTH, OBJECTS, LOCAL_WIDTH, TEXT = 4, 257, 1024, 100, 516, 96


def matmul_flops_per_second(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times)


def timed(step, iters: int) -> float:
    step()  # warm-up (allocator, kernels)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    image = torch.randn(BATCH, IMAGE_TOKENS, IMAGE_WIDTH)
    local = torch.randn(BATCH, OBJECTS, LOCAL_WIDTH)
    local_mask = torch.ones(BATCH, OBJECTS, dtype=torch.long)
    ids = torch.randint(1000, 30000, (BATCH, TEXT))
    ones = torch.ones(BATCH, 32 + 32 + TEXT, dtype=torch.long)

    peak = matmul_flops_per_second()
    print(f"threads: {torch.get_num_threads()}")
    print(f"fp32 matmul (2048^3): {peak / 1e9:.1f} GFLOP/s")

    # 1. Full MQ-Former at paper dims: achieved FLOP/s vs. matmul FLOP/s.
    model = MQFormerModel(MQFormerConfig()).train()

    def full_step():
        out = model(image_embeds=image, local_features=local, local_attention_mask=local_mask, input_ids=ids, attention_mask=ones)
        out.last_hidden_state.float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        full_step()
    flops = counter.get_total_flops()
    seconds = timed(full_step, args.iters)
    achieved = flops / seconds
    print(f"MQ-Former fwd+bwd: {flops / 1e9:.1f} GFLOP in {seconds * 1e3:.0f} ms -> {achieved / 1e9:.1f} GFLOP/s")
    print(f"achieved / matmul FLOP/s: {achieved / peak:.2f}  (aim >= 0.6)")

    # 2. Grounding off vs. transformers' Blip2QFormerModel, same weights shape, same inputs.
    from transformers import Blip2QFormerConfig, Blip2QFormerModel

    ours = MQFormerModel(MQFormerConfig(num_grounding_query_tokens=0)).train()
    ref = Blip2QFormerModel(Blip2QFormerConfig(encoder_hidden_size=IMAGE_WIDTH, use_qformer_text_input=True)).train()
    ref_query = torch.randn(1, 32, 768).expand(BATCH, -1, -1)
    text_mask = torch.ones(BATCH, 32 + TEXT, dtype=torch.long)

    def ours_step():
        out = ours(image_embeds=image, input_ids=ids, attention_mask=text_mask)
        out.last_hidden_state.square().mean().backward()
        ours.zero_grad(set_to_none=True)

    word = torch.nn.Embedding(30531, 768)
    position = torch.nn.Embedding(512, 768)

    def ref_step():
        embeds = torch.cat([ref_query, word(ids) + position(torch.arange(TEXT))[None]], dim=1)
        out = ref(query_embeds=embeds, query_length=32, attention_mask=text_mask, encoder_hidden_states=image)
        out.last_hidden_state.square().mean().backward()
        ref.zero_grad(set_to_none=True)
        word.zero_grad(set_to_none=True)
        position.zero_grad(set_to_none=True)

    # Interleave the two measurements so drift on a shared machine hits both alike.
    ours_times, ref_times = [], []
    ours_step(), ref_step()
    for _ in range(args.iters):
        ours_times.append(timed(ours_step, 1))
        ref_times.append(timed(ref_step, 1))
    t_ours, t_ref = statistics.median(ours_times), statistics.median(ref_times)
    print(f"grounding off: ours {t_ours * 1e3:.0f} ms, Blip2QFormerModel {t_ref * 1e3:.0f} ms")
    print(f"time ours / Blip2QFormerModel: {t_ours / t_ref:.3f}  (aim <= 1.05)")


if __name__ == "__main__":
    main()
