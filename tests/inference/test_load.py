"""Load and fault test against a real `lyrics serve` process on 127.0.0.1 (loopback only, bounded).

200 requests, 8 at a time, a fifth of them malformed in every listed way: no 5xx at all, each
malformed request gets a 4xx with a clear OpenAI-shaped error, the server's memory stays bounded, and
every well-formed (greedy) answer equals the single-request answer of the in-process pipeline.
"""

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from PIL import Image

from inference.tinyckpt import scene

TOTAL, CONCURRENCY, MAX_TOKENS = 200, 8, 8
PROMPTS = ["what color is the circle?", "how many objects are there?", "is there a red square?"]
RSS_GROWTH_LIMIT_MB = 100
TIME_LIMIT_S = 150


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def good_request(i: int) -> tuple[dict, int]:
    k = i % 6
    content = [{"type": "image_url", "image_url": {"url": data_url(png(scene(k)))}}, {"type": "text", "text": PROMPTS[k % 3]}]
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": MAX_TOKENS, "temperature": 0}
    if i % 4 == 0:
        body["stream"] = True
    return body, k


def malformed(kind: str) -> tuple[bytes, str]:
    """(raw body, kind): each kind of bad input the issue lists, plus a few more."""
    good, _ = good_request(1)
    if kind == "bad_base64":
        good["messages"][0]["content"][0]["image_url"]["url"] = "data:image/png;base64,%%%not*base64%%%"
    elif kind == "not_an_image":
        good["messages"][0]["content"][0]["image_url"]["url"] = data_url(b"this is plain text, not a picture" * 3)
    elif kind == "oversized_image":
        good["messages"][0]["content"][0]["image_url"]["url"] = data_url(png(Image.new("RGB", (400, 400), "white")))
    elif kind == "oversized_body":
        return json.dumps({"model": "tiny", "pad": "x" * 600_000}).encode(), kind
    elif kind == "missing_fields":
        good = {"model": "tiny"}
    elif kind == "unknown_model":
        good["model"] = "gpt-4o"
    elif kind == "huge_max_tokens":
        good["max_tokens"] = 10**9
    elif kind == "invalid_json":
        return b'{"model": "tiny", "messages": [', kind
    return json.dumps(good).encode(), kind


KINDS = ["bad_base64", "not_an_image", "oversized_image", "oversized_body", "missing_fields", "unknown_model", "huge_max_tokens", "invalid_json"]


def send(client: httpx.Client, i: int) -> dict:
    if i % 5 == 4:
        raw, kind = malformed(KINDS[(i // 5) % len(KINDS)])
        response = client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
        return {"kind": kind, "status": response.status_code, "body": response.json()}
    body, k = good_request(i)
    if body.get("stream"):
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = [line for line in response.iter_lines() if line]
        if response.status_code != 200:
            return {"kind": "good", "status": response.status_code, "k": k, "text": None}
        chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c.get("choices"))
        return {"kind": "good", "status": 200, "k": k, "text": text, "done": lines[-1] == "data: [DONE]"}
    response = client.post("/v1/chat/completions", json=body)
    text = response.json()["choices"][0]["message"]["content"] if response.status_code == 200 else None
    return {"kind": "good", "status": response.status_code, "k": k, "text": text, "done": True}


def test_load_and_faults_on_a_real_server(checkpoint, pipe):
    expected = {k: pipe(scene(k), PROMPTS[k % 3], max_new_tokens=MAX_TOKENS).text for k in range(6)}
    port = free_port()
    command = [
        sys.executable, "-m", "lyrics", "serve", "--model", str(checkpoint), "--host", "127.0.0.1", "--port", str(port),
        "--model-name", "tiny", "--max-image-pixels", "40000", "--max-body-mb", "0.5", "--max-tokens", "64",
        "--max-batch-size", "8", "--batch-window-ms", "5", "--log-level", "warning",
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, trust_env=False) as client:
            deadline = time.monotonic() + 90
            while True:
                assert server.poll() is None, server.stderr.read().decode()[-3000:]
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.3)

            start = time.monotonic()
            with ThreadPoolExecutor(CONCURRENCY) as pool:
                warmup = list(pool.map(lambda i: send(client, i), range(24)))
                baseline = rss_mb(server.pid)
                rest = list(pool.map(lambda i: send(client, i), range(24, TOTAL)))
            elapsed = time.monotonic() - start
            final_rss = rss_mb(server.pid)
            health = client.get("/health").json()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    outcomes = warmup + rest
    print(f"load: {elapsed:.1f} s, rss {baseline:.0f} -> {final_rss:.0f} MB, {health}")
    assert len(outcomes) == TOTAL and elapsed < TIME_LIMIT_S
    assert not [o for o in outcomes if o["status"] >= 500], "no 5xx at all"
    bad = [o for o in outcomes if o["kind"] != "good"]
    assert len(bad) == TOTAL // 5 and {o["kind"] for o in bad} == set(KINDS)
    for o in bad:
        assert 400 <= o["status"] < 500, o
        error = o["body"]["error"]
        assert set(error) == {"message", "type", "param", "code"} and len(error["message"]) >= 20, o
    statuses = {o["kind"]: o["status"] for o in bad}
    assert statuses["oversized_body"] == 413 and statuses["unknown_model"] == 404 and statuses["huge_max_tokens"] == 400
    good = [o for o in outcomes if o["kind"] == "good"]
    assert all(o["status"] == 200 and o["done"] for o in good)
    mismatched = [(o["k"], o["text"], expected[o["k"]]) for o in good if o["text"] != expected[o["k"]]]
    assert not mismatched, mismatched[:3]
    assert final_rss - baseline < RSS_GROWTH_LIMIT_MB, (baseline, final_rss)
    assert health["queue_depth"] == 0 and health["in_flight"] == 0 and health["batches"] < len(good)  # batching happened
    assert server.returncode == 0, server.stderr.read().decode()[-2000:]
