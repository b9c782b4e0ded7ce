"""The OpenAI-compatible server in-process (FastAPI TestClient): schemas, SSE, errors, limits, auth."""

import base64
import io
import json
import threading

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lyrics.inference.limits import ServerLimits
from lyrics.inference.server import create_app

KEY = {"Authorization": "Bearer sekrit"}


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def body(image, text="what color is the circle?", **extra):
    content = [{"type": "image_url", "image_url": {"url": data_url(image)}}, {"type": "text", "text": text}]
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 8, "temperature": 0, **extra}


@pytest.fixture(scope="module")
def client(pipe):
    limits = ServerLimits(max_tokens=32, max_body_bytes=200_000, max_image_pixels=20_000, batch_window_ms=5)
    with TestClient(create_app(pipe, "tiny", limits, api_key="sekrit")) as client:
        yield client


def test_completion_matches_the_pipeline_and_carries_boxes_and_objects(client, pipe, scenes):
    response = client.post("/v1/chat/completions", json=body(scenes[1]), headers=KEY)
    assert response.status_code == 200
    data = response.json()
    expected = pipe(scenes[1], "what color is the circle?", max_new_tokens=8)
    assert data["object"] == "chat.completion" and data["model"] == "tiny" and data["id"].startswith("chatcmpl-")
    assert data["choices"][0]["message"] == {"role": "assistant", "content": expected.text}
    assert data["choices"][0]["finish_reason"] == expected.finish_reason
    assert data["usage"]["total_tokens"] == expected.prompt_tokens + expected.completion_tokens
    assert data["lyrics"]["tags"] == expected.tags and data["lyrics"]["image_size"] == [96, 96]
    assert [o["tag"] for o in data["lyrics"]["objects"]] == [o.tag for o in expected.objects]
    assert data["lyrics"]["boxes"] == [b.to_dict() for b in expected.boxes]


def test_streaming_sends_openai_chunks_then_done(client, pipe, scenes):
    expected = pipe(scenes[2], "how many objects are there?", max_new_tokens=8)
    request = body(scenes[2], "how many objects are there?", stream=True, stream_options={"include_usage": True})
    with client.stream("POST", "/v1/chat/completions", json=request, headers=KEY) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == expected.text and len(chunks) > 4
    final = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(final) == 1 and final[0]["lyrics"]["tags"] == expected.tags
    assert chunks[-1]["usage"]["completion_tokens"] == expected.completion_tokens


def test_multi_turn_system_and_regions(client, pipe, scenes):
    first = pipe(scenes[0], "what color is the circle?", max_new_tokens=6)
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(scenes[0])}}, {"type": "text", "text": "what color is the circle?"}]},
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "what is the object <region>?"},
    ]
    request = {"model": "tiny", "messages": messages, "max_tokens": 6, "temperature": 0, "regions": [[8, 8, 40, 40]]}
    response = client.post("/v1/chat/completions", json=request, headers=KEY)
    assert response.status_code == 200, response.text
    expected = pipe(scenes[0], "what is the object <region>?", history=first.conversation, regions=[(8, 8, 40, 40)], system="You are terse.", max_new_tokens=6)
    assert response.json()["choices"][0]["message"]["content"] == expected.text
    assert response.json()["usage"]["prompt_tokens"] == expected.prompt_tokens


def test_regions_in_normalised_units_and_bad_regions(client, pipe, scenes):
    expected = pipe(scenes[0], "what is the object <region>?", regions=[(8, 8, 40, 40)], max_new_tokens=6)
    for regions, region_format in ([[8, 8, 40, 40]], "pixels"), ([[83.3333, 83.3333, 416.6667, 416.6667]], "0-1000"), ([[1 / 12, 1 / 12, 5 / 12, 5 / 12]], "0-1"):
        request = body(scenes[0], "what is the object <region>?", max_tokens=6, regions=regions, region_format=region_format)
        data = client.post("/v1/chat/completions", json=request, headers=KEY).json()
        assert data["choices"][0]["message"]["content"] == expected.text, region_format
        assert data["lyrics"]["regions"] == [[8.0, 8.0, 40.0, 40.0]]
    # a question without a placeholder about one region gets one, as in the pipeline and the demo
    no_mark = client.post("/v1/chat/completions", json=body(scenes[0], "what is the object?", max_tokens=6, regions=[[8, 8, 40, 40]]), headers=KEY)
    assert no_mark.status_code == 200 and no_mark.json()["lyrics"]["regions"] == [[8.0, 8.0, 40.0, 40.0]]
    for regions, text in (
        ([[50, 50, 120, 90]], "not inside the 96x96 image"),
        ([[10, 10, 10, 40]], "no area"),
        ([[8, 8, 40, 40], [1, 1, 5, 5]], "1 <region> placeholder(s) but 2 region(s)"),
    ):
        error = error_of(client.post("/v1/chat/completions", json=body(scenes[0], "what is <region>?", regions=regions), headers=KEY), 400)
        assert text in error["message"] and error["param"] == "regions"
    error = error_of(client.post("/v1/chat/completions", json=body(scenes[0], "what is <region>?", regions=[[1, 1, 5, 5]], region_format="percent"), headers=KEY), 400)
    assert "region_format" in (error["param"] or "") + error["message"]


def test_models_health_and_auth(client):
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/models", headers=KEY).json()["data"][0]["id"] == "tiny"
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny" and health["queue_depth"] == 0


def error_of(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and len(error["message"]) > 15
    return error


def test_bad_requests_get_openai_errors_naming_the_problem(client, scenes):
    small = scenes[0]
    big = Image.new("RGB", (200, 200), "white")  # 40000 pixels > 20000
    cases = [
        (dict(body(small), model="gpt-4"), 404, "does not exist"),
        (dict(body(small), max_tokens=100_000), 400, "max_tokens=100000 exceeds"),
        ({"model": "tiny"}, 400, "messages: Field required"),
        (body(big), 400, "200x200 = 40000 pixels"),
        (dict(body(small), n=3), 400, "n=3"),
        (dict(body(small), temperature=5), 400, "temperature"),
        ({"model": "tiny", "messages": [{"role": "assistant", "content": "hi"}]}, 400, "last message must have role 'user'"),
        ({"model": "tiny", "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages.0.role"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "<image> hi"}]}, 400, "reserved token"),
    ]
    for request, status, message in cases:
        error = error_of(client.post("/v1/chat/completions", json=request, headers=KEY), status)
        assert message in error["message"], error
    bad_b64 = body(small)
    bad_b64["messages"][0]["content"][0]["image_url"]["url"] = "data:image/png;base64,!!notbase64!!"
    error = error_of(client.post("/v1/chat/completions", json=bad_b64, headers=KEY), 400)
    assert error["code"] == "invalid_base64" and error["param"] == "messages[0].content[0].image_url"
    remote = body(small)
    remote["messages"][0]["content"][0]["image_url"]["url"] = "https://127.0.0.1:9/x.png"
    assert "--allow-remote-urls" in error_of(client.post("/v1/chat/completions", json=remote, headers=KEY), 400)["message"]
    assert "not valid JSON" in error_of(client.post("/v1/chat/completions", content=b"{", headers=KEY), 400)["message"]
    huge = client.post("/v1/chat/completions", content=b"x" * 300_000, headers=KEY)
    assert error_of(huge, 413)["code"] == "request_too_large"
    assert error_of(client.get("/v1/nothing", headers=KEY), 404)["type"] == "invalid_request_error"
    stream = client.post("/v1/chat/completions", json=dict(body(small, "what is <region>?"), stream=True), headers=KEY)
    assert "placeholder" in error_of(stream, 400)["message"]  # a streamed request still gets a 4xx status


def test_full_queue_answers_429(pipe, scenes):
    limits = ServerLimits(max_concurrent=1, batch_window_ms=0)
    with TestClient(create_app(pipe, "tiny", limits)) as client:
        barrier, statuses = threading.Barrier(4), []

        def send():
            barrier.wait()
            statuses.append(client.post("/v1/chat/completions", json=dict(body(scenes[0]), max_tokens=24)))

        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    codes = sorted(r.status_code for r in statuses)
    assert 200 in codes and 429 in codes and set(codes) <= {200, 429}
    rejected = next(r for r in statuses if r.status_code == 429)
    assert rejected.json()["error"]["type"] == "rate_limit_error" and rejected.headers["retry-after"] == "1"


def test_serve_builds_the_recorded_refiner_and_refuses_a_contradicting_one(checkpoint, tmp_path, monkeypatch):
    """`lyrics serve` loads the checkpoint's own refiner before it binds a port; a --refiner that
    contradicts the record stops it with the differing field named."""
    from typer.testing import CliRunner

    from inference.tinyckpt import with_refiner
    from lyrics.cli import app

    served = []
    monkeypatch.setattr("lyrics.inference.server.create_app", lambda pipeline, *args, **kwargs: served.append(pipeline))
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: None)
    recorded = with_refiner(checkpoint, tmp_path / "ckpt", trained={"max_objects": 3})
    bad = CliRunner().invoke(app, ["serve", "--model", str(recorded), "--refiner", "max_objects=8"], env={"COLUMNS": "400"})
    assert bad.exit_code == 2 and "max_objects: 3 vs 8" in bad.output and served == []
    good = CliRunner().invoke(app, ["serve", "--model", str(recorded), "--refiner", "batch_size=2"])
    assert good.exit_code == 0, good.output
    assert [(p.refiner.config.max_objects, p.refiner.config.batch_size) for p in served] == [(3, 2)]


def test_serve_flags_reach_the_hardening_limits(monkeypatch):
    from typer.testing import CliRunner

    from lyrics.cli import app

    seen = []
    monkeypatch.setattr("lyrics.inference.server.serve", lambda model, host, port, name, limits, *args, **kwargs: seen.append(limits))
    result = CliRunner().invoke(app, ["serve", "--model", ".", "--max-aspect-ratio", "8", "--max-json-depth", "12", "--body-timeout", "5"])
    assert result.exit_code == 0, result.output
    assert (seen[0].max_aspect_ratio, seen[0].max_json_depth, seen[0].body_timeout_s) == (8.0, 12, 5.0)
