"""`lyrics serve`'s regions on vLLM (`lyrics.serving_vllm.regions`), tested without vLLM: the request's
`mm_processor_kwargs` are checked, and the HTTP middleware moves `lyrics serve`'s body fields into
them. The prompt ids with regions rendered: `test_prompt.py`; through vLLM itself:
`test_vllm_equivalence.py`."""

from __future__ import annotations

import asyncio
import json
import pytest

from lyrics.inference.inputs import InputError
from lyrics.serving_vllm.regions import MIDDLEWARE, RegionsMiddleware, move_regions, region_options

def test_mm_processor_kwargs_are_checked():
    assert region_options({}) == (None, "pixels")
    assert region_options({"regions": [[1, 2, 3, 4]], "region_format": "0-1000"}) == ([[1.0, 2.0, 3.0, 4.0]], "0-1000")
    for kwargs, param in [
        ({"regions": [[1, 2, 3, 4]], "do_resize": False}, "mm_processor_kwargs"),  # another key would be silently ignored
        ({"region_format": "0-100"}, "region_format"),
        ({"regions": [["cat", [1, 2, 3, 4]]]}, "regions"),  # tagged boxes: the Python API's, not the server's
        ({"regions": "1,2,3,4"}, "regions"),
    ]:
        with pytest.raises(InputError) as error:
            region_options(kwargs)
        assert error.value.param == param, kwargs


def test_the_middleware_moves_lyrics_serves_fields_into_mm_processor_kwargs():
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    body = {"model": "m", "messages": [{"role": "user", "content": [image, {"type": "text", "text": "What is <region>?"}]}],
            "regions": [[1, 2, 30, 40]], "region_format": "0-1000"}  # fmt: skip
    assert move_regions(body) and body["mm_processor_kwargs"] == {"regions": [[1, 2, 30, 40]], "region_format": "0-1000"}
    assert "regions" not in body and not move_regions(body)  # done once; the vLLM form passes as it is
    assert not move_regions({"model": "m", "messages": [], "regions": None})  # null: no regions, as `lyrics serve` reads it
    refused = [
        ({"messages": [{"role": "user", "content": "What is <region>?"}], "regions": [[1, 2, 3, 4]]}, "regions"),  # no image
        ({"messages": body["messages"], "regions": [[1, 2, 3, 4]], "mm_processor_kwargs": {"regions": [[5, 6, 7, 8]]}}, "regions"),
        ({"messages": body["messages"], "media_io_kwargs": {"image": {"mode": "L"}}}, "media_io_kwargs"),
    ]
    for payload, param in refused:
        with pytest.raises(InputError) as error:
            move_regions(payload)
        assert error.value.param == param, payload

    async def app(scope, receive, send):  # vLLM's server: echoes the body it reads
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message["body"], message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": scope["headers"]})
        await send({"type": "http.response.body", "body": body})

    async def call(payload: dict, path="/v1/chat/completions") -> tuple[int, dict, dict]:
        raw = json.dumps(payload).encode()
        chunks = [{"type": "http.request", "body": raw[:10], "more_body": True}, {"type": "http.request", "body": raw[10:], "more_body": False}]
        sent = []

        async def receive():
            return chunks.pop(0)

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-length", str(len(raw)).encode())]}
        await RegionsMiddleware(app)(scope, receive, send)
        headers = dict(sent[0].get("headers", []))
        return sent[0]["status"], json.loads(sent[1]["body"]), headers

    status, echoed, headers = asyncio.run(call({**body, "regions": [[1, 2, 30, 40]]}))
    assert status == 200 and echoed["mm_processor_kwargs"]["regions"] == [[1, 2, 30, 40]] and "regions" not in echoed
    assert int(headers[b"content-length"]) == len(json.dumps(echoed).encode())
    status, error, _ = asyncio.run(call({"model": "m", "messages": [{"role": "user", "content": "hi"}], "regions": [[1, 2, 3, 4]]}))
    assert status == 400 and error["error"]["param"] == "regions" and error["error"]["type"] == "BadRequestError"
    untouched = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "regions": [[1, 2, 3, 4]]}
    assert asyncio.run(call(untouched, path="/v1/completions"))[1] == untouched  # other routes pass through


def test_the_serve_helper_adds_the_middleware_and_trusts_mm_processor_kwargs():
    from lyrics.serving_vllm.__main__ import regions_options

    assert regions_options(["--dtype", "float32"]) == ["--middleware", MIDDLEWARE, "--trust-request-mm-kwargs"]
    assert regions_options(["--middleware", MIDDLEWARE, "--trust-request-mm-kwargs"]) == []
