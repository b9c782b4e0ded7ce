"""Regression tests for the hostile-client review (issue 25): each input below once broke the server.

1. a JSON body nested 1000 levels deep (500, RecursionError)
2. temperature 1e-40 (500 "probability tensor contains inf, nan"; a crash event inside a 200 stream)
3. a 1,000,000 x 1 PNG of 3 kB (500 MemoryError after 14 s, and its batch neighbour failed too)
4. a body declaring Content-Length 1000 that sends 9 bytes (held open forever)
5. the decompression-bomb message quoted PIL's limit instead of the server's
"""

import asyncio
import base64
import io
import json
import socket
import struct
import threading
import time
import zlib

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lyrics.inference.batching import DynamicBatcher
from lyrics.inference.generation import GenerationSettings
from lyrics.inference.inputs import InputError, decode_image
from lyrics.inference.limits import ServerLimits, parse_json
from lyrics.inference.pipeline import ChatRequest
from lyrics.inference.server import create_app


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that only claims its size (IHDR, an empty IDAT): what a bomb's header looks like."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def image_body(data: bytes, text: str = "what color is the circle?", **extra) -> dict:
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 6, "temperature": 0, **extra}


@pytest.fixture(scope="module")
def client(pipe):
    with TestClient(create_app(pipe, "tiny", ServerLimits(max_tokens=32, batch_window_ms=5))) as client:
        yield client


def error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


# --- 1. nesting ---------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [33, 1000, 100_000])
def test_deeply_nested_json_gets_400_naming_the_depth_limit(client, depth):
    inner = "[" * (depth - 1) + "]" * (depth - 1)
    raw = '{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "extra": ' + inner + "}"
    err = error(client.post("/v1/chat/completions", content=raw.encode()), 400)
    assert err["code"] == "json_too_deep" and "more than 32 levels" in err["message"]


def test_nesting_at_the_limit_and_ordinary_requests_pass():
    limit_deep = json.dumps({"a": [[[[{"b": [1]}]]]]})  # depth 7
    assert parse_json(limit_deep.encode(), 7)["a"][0][0][0][0]["b"] == [1]
    with pytest.raises(InputError, match="more than 6 levels"):
        parse_json(limit_deep.encode(), 6)
    with pytest.raises(InputError, match="not valid JSON"):  # NaN is not JSON, though Python's json takes it
        parse_json(b'{"temperature": NaN}', 32)
    # Brackets inside strings are text, not nesting.
    assert parse_json(json.dumps({"text": "[" * 5000}).encode(), 2) == {"text": "[" * 5000}


# --- 2. temperature -----------------------------------------------------------------------------
def test_tiny_temperatures_decode_greedily_instead_of_crashing(client):
    greedy = client.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0})
    expected = greedy.json()["choices"][0]["message"]["content"]
    for temperature in (1e-40, 1e-300, 5e-324, 0.009):
        request = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": temperature}
        response = client.post("/v1/chat/completions", json=request)
        assert response.status_code == 200, (temperature, response.text)
        assert response.json()["choices"][0]["message"]["content"] == expected
        with client.stream("POST", "/v1/chat/completions", json=dict(request, stream=True)) as stream:
            assert stream.status_code == 200
            lines = [line for line in stream.iter_lines() if line]
        assert lines[-1] == "data: [DONE]" and not any('"error"' in line for line in lines), lines[-3:]
        chunks = [json.loads(line[6:]) for line in lines[:-1]]
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == expected


def test_generation_settings_floor():
    assert not GenerationSettings(do_sample=True, temperature=1e-40).do_sample
    assert GenerationSettings(do_sample=True, temperature=1e-40).batch_key() == GenerationSettings().batch_key()
    assert GenerationSettings(do_sample=True, temperature=0.01).do_sample  # the floor itself still samples


# --- 3. thin strips -------------------------------------------------------------------------------
def test_thin_strip_is_refused_fast_and_a_concurrent_good_request_answers(client, pipe, scenes):
    strip = png(1_000_000, 1)
    assert len(strip) < 4000  # the review's 2,991-byte strip
    expected = pipe(scenes[1], "what color is the circle?", max_new_tokens=6).text
    results = {}

    def send(name, body):
        results[name] = client.post("/v1/chat/completions", json=body)

    good = io.BytesIO()
    scenes[1].save(good, format="PNG")
    threads = [threading.Thread(target=send, args=("strip", image_body(strip))), threading.Thread(target=send, args=("good", image_body(good.getvalue())))]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - start < 10
    err = error(results["strip"], 400)
    assert err["code"] == "image_aspect_ratio" and "1000000x1" in err["message"] and "limit of 20:1" in err["message"]
    assert err["param"] == "messages[0].content[0].image_url"
    assert results["good"].status_code == 200 and results["good"].json()["choices"][0]["message"]["content"] == expected


@pytest.mark.parametrize("size", [(1, 1), (20, 1), (1, 20), (3, 2), (640, 32)])
def test_small_and_thin_images_within_the_ratio_are_answered(client, size):
    response = client.post("/v1/chat/completions", json=image_body(png(*size)))
    assert response.status_code == 200, response.text
    assert response.json()["lyrics"]["image_size"] == list(size)


def test_the_pipeline_refuses_strips_before_the_refiner_and_the_image_processor(pipe, scenes, monkeypatch):
    """The Python API (PIL images, no server in front) has the same bound; the strip's row fails alone."""
    seen = []
    original = pipe.refiner.__class__.__call__
    monkeypatch.setattr(pipe.refiner.__class__, "__call__", lambda self, images, *a, **k: seen.extend(i.size for i in images) or original(self, images, *a, **k))
    strip = Image.new("RGB", (4200, 200), "white")  # 21:1
    prepared = pipe.prepare([ChatRequest(strip, "hi"), ChatRequest(scenes[0], "hi")])
    assert isinstance(prepared[0], InputError) and "21.0:1" in prepared[0].message
    assert not isinstance(prepared[1], InputError) and seen == [(96, 96)]
    with pytest.raises(InputError, match="aspect ratio"):
        pipe(strip, "hi")


def test_a_server_aspect_limit_above_the_pipelines_is_refused_at_startup(pipe):
    with pytest.raises(ValueError, match="max_aspect_ratio=50 is above the pipeline's max_aspect_ratio=20"):
        create_app(pipe, "tiny", ServerLimits(max_aspect_ratio=50))


# --- 4. stalled bodies ------------------------------------------------------------------------
def run_asgi(app, messages, pause_s: float | None, headers=()) -> tuple[int | None, dict, float, dict]:
    """Call the app in-process with a client that sends `messages`, then stalls (pause_s None) or
    trickles one byte every `pause_s`. Returns the status, the JSON error, the seconds taken and the headers."""
    sent: list[dict] = []

    async def main():
        queue = list(messages)

        async def receive():
            if queue:
                return queue.pop(0)
            if pause_s is None:
                await asyncio.Event().wait()  # never sends the rest
            await asyncio.sleep(pause_s)
            return {"type": "http.request", "body": b"x", "more_body": True}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
                 "headers": [(b"content-type", b"application/json"), *headers], "client": ("127.0.0.1", 1), "server": ("testserver", 80)}  # fmt: skip
        start = time.monotonic()
        await asyncio.wait_for(app(scope, receive, send), 10)
        return time.monotonic() - start

    elapsed = asyncio.run(main())
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return (start or {}).get("status"), json.loads(body or b"{}"), elapsed, dict((start or {}).get("headers", []))


def test_stalled_body_gets_408_in_process(pipe):
    app = create_app(pipe, "tiny", ServerLimits(body_timeout_s=0.3))
    status, body, elapsed, headers = run_asgi(app, [{"type": "http.request", "body": b'{"model":', "more_body": True}], None, [(b"content-length", b"1000")])
    assert status == 408 and 0.25 < elapsed < 5 and headers[b"connection"] == b"close"
    assert body["error"]["code"] == "request_timeout" and "9 bytes of the 1000 declared" in body["error"]["message"]
    # A client trickling a byte every 50 ms never stalls, yet meets the same deadline.
    status, body, elapsed, _ = run_asgi(app, [], 0.05)
    assert status == 408 and elapsed < 5


def test_stalled_body_gets_408_on_a_real_socket(pipe):
    from lyrics.inference.server import serve_in_background

    app = create_app(pipe, "tiny", ServerLimits(body_timeout_s=0.5))
    with serve_in_background(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + b'{"model":')
            start, reply = time.monotonic(), b""
            while chunk := conn.recv(65536):  # ends when the server closes the connection
                reply += chunk
            elapsed = time.monotonic() - start
    assert reply.startswith(b"HTTP/1.1 408") and b"request_timeout" in reply and 0.4 < elapsed < 5


# --- batch isolation ------------------------------------------------------------------------------
def test_a_failure_inside_a_batch_fails_only_the_request_that_caused_it(pipe, scenes, monkeypatch):
    """A row whose pixels blow up the image processor (as the strip did) no longer takes its batch
    neighbours down: the batch is retried row by row and only that row fails."""
    original = pipe.processor.pixel_values
    calls = []

    def poisoned(images):
        calls.append(len(images))
        if any(image.width == 600 for image in images):
            raise MemoryError("simulated: the processor built an enormous array")
        return original(images)

    monkeypatch.setattr(pipe.processor, "pixel_values", poisoned)
    settings = GenerationSettings(max_new_tokens=6)
    expected = [pipe.run([ChatRequest(scenes[i], "what color is the circle?", settings=settings)])[0].text for i in (0, 2)]
    calls.clear()

    async def main():
        batcher = DynamicBatcher(pipe, max_batch_size=4, window_ms=300)
        batcher.start()
        pieces: list[str] = []
        good = batcher.submit(ChatRequest(scenes[0], "what color is the circle?", settings=settings))
        bad = batcher.submit(ChatRequest(Image.new("RGB", (600, 30), "white"), "what color is the circle?", settings=settings))
        streamed = batcher.submit(ChatRequest(scenes[2], "what color is the circle?", settings=settings), on_text=pieces.append)
        outcomes = await asyncio.gather(good.result, bad.result, streamed.result, return_exceptions=True)
        await batcher.close()
        return outcomes, pieces

    (good, bad, streamed), pieces = asyncio.run(main())
    assert calls[0] == 3  # they were batched together, then retried alone
    assert isinstance(bad, MemoryError)
    assert good.text == expected[0] and streamed.text == expected[1] and "".join(pieces) == expected[1]


# --- 5. limits quoted ------------------------------------------------------------------------------
def test_decompression_bomb_message_quotes_the_server_limit():
    with pytest.raises(InputError) as info:
        decode_image(png_header(20_000, 20_000), 4096 * 4096, "messages[0].content[0].image_url")
    message = info.value.message
    assert "400000000 pixels" in message and "limit of 16777216" in message and "178956970" not in message
    assert info.value.code == "image_too_large"
