"""Serving benchmarks for `lyrics.inference`, measured side by side in one run on a tiny checkpoint.

Prints:
  1. the OpenAI-compatible server (real uvicorn on 127.0.0.1, in-process) under concurrent load, with
     dynamic batching (`--max-batch-size 8`) and without (`1`): throughput, p50 / p95 latency, ratios;
  2. generation time to first token and decode tokens/s of `LyricsForConditionalGeneration` against
     transformers' `Blip2ForConditionalGeneration` built with the same tiny LLM (same weights) and the
     same number of query tokens, on the same prompt (aim: Lyrics / BLIP-2 time ratio <= 1.1);
     plus the whole pipeline's time to first token (live refiner included), for reference.

The checkpoint is random and tiny (tests/tiny.py): the numbers measure framework overhead and
batching, not a real model's speed. Usage: python bench/serve.py [--requests 128] [--concurrency 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the shared tiny-model helpers

from inference.tinyckpt import build_checkpoint, scene  # noqa: E402

PROMPTS = ["what color is the circle?", "how many objects are there?", "is there a red square?"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- 1. server with and without dynamic batching ---------------------------------------------------
def request_bodies(requests: int, max_tokens: int) -> list[dict]:
    bodies = []
    for i in range(requests):
        buffer = io.BytesIO()
        scene(i % 6).save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": PROMPTS[i % 3]}]
        bodies.append({"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0})
    return bodies


def load(pipeline, requests: int, concurrency: int, max_tokens: int, rounds: int) -> dict[str, dict[str, float]]:
    """Two servers on one pipeline, batch size 1 and 8, loaded in alternating rounds (so machine
    noise hits both alike); per mode: throughput over all its rounds, p50 / p95 latency, model calls."""
    import httpx

    from contextlib import ExitStack

    from lyrics.inference.limits import ServerLimits
    from lyrics.inference.server import create_app, serve_in_background

    modes = {"off": 1, "on": 8}
    bodies = request_bodies(requests, max_tokens)
    latencies: dict[str, list[float]] = {name: [] for name in modes}
    walls = {name: 0.0 for name in modes}
    out = {}
    with ExitStack() as servers:
        urls = {name: servers.enter_context(serve_in_background(create_app(
                    pipeline, "tiny", ServerLimits(max_batch_size=size, batch_window_ms=5, max_concurrent=4 * concurrency))))
                for name, size in modes.items()}  # fmt: skip
        clients = {name: httpx.Client(base_url=url, timeout=120, trust_env=False) for name, url in urls.items()}

        def one(client, body) -> float:
            start = time.perf_counter()
            client.post("/v1/chat/completions", json=body).raise_for_status()
            return time.perf_counter() - start

        with ThreadPoolExecutor(concurrency) as pool:
            for name, client in clients.items():  # warm-up
                list(pool.map(lambda b: one(client, b), bodies[: 2 * concurrency]))
            per_round = max(concurrency, requests // rounds)
            for _ in range(rounds):
                for name, client in clients.items():
                    start = time.perf_counter()
                    latencies[name] += pool.map(lambda b: one(client, b), bodies[:per_round])
                    walls[name] += time.perf_counter() - start
        for name, client in clients.items():
            out[name] = {"throughput": len(latencies[name]) / walls[name], "p50": percentile(latencies[name], 0.5),
                         "p95": percentile(latencies[name], 0.95), "batches": client.get("/health").json()["batches"]}  # fmt: skip
            client.close()
    return out


# --- 2. time to first token and tokens/s against BLIP-2 --------------------------------------------
class FirstTokenTimer:
    """A streamer that notes when the first generated token arrives (the prompt's `put` is skipped)."""

    def __init__(self):
        self.calls, self.first = 0, None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def timed_generate(generate, tokens: int) -> tuple[float, float]:
    """One run: time to first token (s) and decode time per token after the first (s)."""
    timer = FirstTokenTimer()
    start = time.perf_counter()
    out = generate(timer)
    end = time.perf_counter()
    assert out.shape[-1] >= tokens, out.shape
    return timer.first - start, (end - timer.first) / (tokens - 1)


def blip2_like(lyrics_model):
    """Blip2ForConditionalGeneration with the Lyrics checkpoint's LLM (weights copied), a vision tower and
    Q-Former of the same sizes, and as many query tokens as Lyrics feeds the LLM (visual + grounding)."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    mq, vision = lyrics_model.config.mqformer_config, lyrics_model.config.vision_config
    llm = lyrics_model.llm
    config = Blip2Config(
        vision_config=dict(hidden_size=vision.hidden_size, intermediate_size=vision.intermediate_size, num_hidden_layers=vision.num_hidden_layers,
                           num_attention_heads=vision.num_attention_heads, image_size=vision.image_size, patch_size=vision.patch_size),
        qformer_config=dict(hidden_size=mq.hidden_size, num_hidden_layers=mq.num_hidden_layers, num_attention_heads=mq.num_attention_heads,
                            intermediate_size=mq.intermediate_size, encoder_hidden_size=vision.hidden_size, vocab_size=mq.vocab_size),
        text_config=llm.config.to_dict(), num_query_tokens=lyrics_model.config.num_image_tokens,
        image_token_index=lyrics_model.config.image_token_index,
    )  # fmt: skip
    model = Blip2ForConditionalGeneration(config)
    model.language_model.load_state_dict(llm.state_dict())
    return model.eval()


def generation(pipeline, tokens: int, repeats: int) -> dict[str, float]:
    from lyrics.inference.pipeline import ChatRequest

    request_rows = pipeline.prepare([ChatRequest(scene(2), PROMPTS[0])])
    batch = pipeline._model_inputs(request_rows)
    model = pipeline.model
    common = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, temperature=None, top_p=None, top_k=None)

    def lyrics_generate(streamer):
        with torch.inference_mode():
            return model.generate(**batch, streamer=streamer, **common)

    blip2 = blip2_like(model)
    blip_inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "pixel_values": batch["pixel_values"]}

    def blip2_generate(streamer):
        with torch.inference_mode():
            return blip2.generate(**blip_inputs, streamer=streamer, **common)

    def pipeline_generate(streamer):  # refiner + prompt encoding + the same generate
        with torch.inference_mode():
            prepared = pipeline.prepare([request_rows[0].request])
            return model.generate(**pipeline._model_inputs(prepared), streamer=streamer, **common)

    runs = {"lyrics": lyrics_generate, "blip2": blip2_generate, "pipeline": pipeline_generate}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for i in range(repeats + 1):  # interleaved, so machine noise hits every side alike
        for name, generate in runs.items():
            sample = timed_generate(generate, tokens)
            if i:  # the first round warms up
                samples[name].append(sample)
    out: dict[str, float] = {}
    for name, values in samples.items():
        # min: the least disturbed run (other processes only ever add time); median for context
        out[f"{name}_ttft"] = min(v[0] for v in values)
        out[f"{name}_ttft_median"] = statistics.median(v[0] for v in values)
        out[f"{name}_tpt"] = min(v[1] for v in values)
        out[f"{name}_tpt_median"] = statistics.median(v[1] for v in values)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=128, help="requests per mode, sent in --rounds alternating rounds")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--gen-tokens", type=int, default=32, help="tokens decoded in the generation benchmark")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import logging

    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("lyrics.serve").setLevel(logging.ERROR)
    from lyrics.inference import LyricsPipeline

    with tempfile.TemporaryDirectory() as tmp:
        pipeline = LyricsPipeline.from_pretrained(build_checkpoint(tmp))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; tiny checkpoint, {pipeline.model.config.num_image_tokens} query tokens")

        print(f"\n1. server: {args.requests} requests per mode in {args.rounds} alternating rounds, {args.concurrency} concurrent, "
              f"max_tokens={args.max_tokens}, greedy")  # fmt: skip
        result = load(pipeline, args.requests, args.concurrency, args.max_tokens, args.rounds)
        off, on = result["off"], result["on"]
        print(f"   {'':22s}{'req/s':>9s}{'p50 s':>9s}{'p95 s':>9s}{'model calls':>13s} (incl. warm-up)")
        for name, r in (("no batching (1)", off), ("dynamic batching (8)", on)):
            print(f"   {name:22s}{r['throughput']:9.2f}{r['p50']:9.3f}{r['p95']:9.3f}{r['batches']:13d}")
        print(f"   throughput ratio batching/none: {on['throughput'] / off['throughput']:.2f}x; "
              f"p50 ratio {on['p50'] / off['p50']:.2f}, p95 ratio {on['p95'] / off['p95']:.2f}")  # fmt: skip

        print(f"\n2. generation, batch 1, {args.gen_tokens} new tokens, {args.repeats} interleaved runs (best / median)")
        g = generation(pipeline, args.gen_tokens, args.repeats)
        print(f"   {'':36s}{'TTFT ms':>18s}{'tokens/s':>18s}")
        for name, label in (("blip2", "Blip2ForConditionalGeneration"), ("lyrics", "LyricsForConditionalGeneration"),
                            ("pipeline", "LyricsPipeline (refiner + model)")):  # fmt: skip
            ttft = f"{g[name + '_ttft'] * 1e3:.1f} / {g[name + '_ttft_median'] * 1e3:.1f}"
            tps = f"{1 / g[name + '_tpt']:.1f} / {1 / g[name + '_tpt_median']:.1f}"
            print(f"   {label:36s}{ttft:>18s}{tps:>18s}")
        print(f"   Lyrics / BLIP-2 (best runs): TTFT ratio {g['lyrics_ttft'] / g['blip2_ttft']:.2f}, "
              f"time per token ratio {g['lyrics_tpt'] / g['blip2_tpt']:.2f} (aim <= 1.1)")  # fmt: skip


if __name__ == "__main__":
    main()
