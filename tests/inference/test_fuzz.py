"""Fuzzing the HTTP API in-process: no input may produce a 5xx.

Requests come from schemathesis reading the app's own /openapi.json (the body schema is the pydantic
request model): schema-valid bodies, which reach the tiny model, and schema-violating ones, which
must be refused with an OpenAI-shaped 4xx. A second test feeds generated images (every PIL mode,
several formats, thin strips on both sides of the aspect limit, truncated files) through a valid
request. Hypothesis runs derandomized with no example database, so every run sends the same cases.
"""

import base64
import io
import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lyrics.inference.limits import ServerLimits
from lyrics.inference.server import create_app

FUZZ = settings(derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
LIMITS = ServerLimits(max_tokens=16, default_max_tokens=4, max_body_bytes=400_000, max_image_pixels=20_000, batch_window_ms=0)


@pytest.fixture(scope="module")
def client(pipe):
    with TestClient(create_app(pipe, "tiny", LIMITS), raise_server_exceptions=False) as client:
        yield client


def check_response(response) -> None:
    """No 5xx; errors in OpenAI's shape; answers (plain or streamed) complete."""
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    elif response.headers["content-type"].startswith("text/event-stream"):
        lines = [line for line in response.text.splitlines() if line]
        assert lines[-1] == "data: [DONE]" and not any(line.startswith('data: {"error"') for line in lines), lines[-3:]
    elif response.request.method == "POST":
        assert response.json()["object"] == "chat.completion"


@st.composite
def ending_with_a_question(draw, cases):
    """A schema-generated case whose messages, half of the time, end with a user question: most
    schema-valid bodies break a rule JSON schema cannot state (the last message must be a user's,
    with text), and would never reach the model otherwise."""
    case = draw(cases)
    if isinstance(case.body, dict) and isinstance(case.body.get("messages"), list) and draw(st.booleans()):
        case.body["messages"].append({"role": "user", "content": draw(st.text(min_size=1, max_size=60))})
    return case


@pytest.mark.parametrize("mode, examples", [("positive", 150), ("negative", 150)])
def test_schema_fuzzed_requests_never_get_a_5xx(client, mode, examples):
    schemathesis = pytest.importorskip("schemathesis", reason="a dev dependency (pip install -e '.[dev]')")
    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    operation = schema["/v1/chat/completions"]["POST"]
    strategy = operation.as_strategy(schemathesis.GenerationMode(mode))
    if mode == "positive":
        strategy = ending_with_a_question(strategy)
    statuses: dict[int, int] = {}

    @settings(FUZZ, max_examples=examples)
    @given(case=strategy)
    def run(case):
        kwargs = case.as_transport_kwargs(base_url="http://testserver")
        kwargs.pop("cookies", None)
        response = client.request(**kwargs)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        check_response(response)

    run()
    print(mode, sorted(statuses.items()))
    assert sum(statuses.values()) >= examples // 2
    if mode == "positive":  # the generator must get past validation, or the model is never fuzzed
        assert statuses.get(200, 0) >= 10, statuses


MODES = ["RGB", "RGBA", "L", "LA", "P", "1", "I", "I;16", "F", "CMYK"]
FORMATS = {"PNG": ("RGB", "RGBA", "L", "LA", "P", "1", "I", "I;16"), "GIF": ("P", "L", "1"), "BMP": ("RGB", "L", "P", "1"),
           "JPEG": ("RGB", "L", "CMYK"), "TIFF": ("RGB", "RGBA", "L", "F", "I;16", "CMYK"), "WEBP": ("RGB", "RGBA")}  # fmt: skip


@st.composite
def encoded_images(draw) -> bytes:
    """Small images of every mode in the formats that take them, strips near the 20:1 limit, and
    files cut short or replaced by noise."""
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(FORMATS[fmt]))
    short = draw(st.integers(1, 12))
    ratio = draw(st.sampled_from([1, 2, 7, 20, 21, 40]))
    width, height = (short * ratio, short) if draw(st.booleans()) else (short, short * ratio)
    seed = draw(st.integers(0, 255))
    image = Image.new(mode, (width, height), seed if mode not in ("RGB", "RGBA", "CMYK", "LA") else tuple([seed] * len(mode)))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none"] * 4 + ["truncate", "noise"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "noise":
        data = data[:8] + draw(st.binary(min_size=0, max_size=64))
    return data


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # PIL's note on the truncated TIFFs
def test_fuzzed_images_never_get_a_5xx(client):
    statuses: dict[int, int] = {}

    @settings(FUZZ, max_examples=80)
    @given(data=encoded_images(), text=st.text(max_size=40), stream=st.booleans())
    def run(data, text, stream):
        url = "data:image/png;base64," + base64.b64encode(data).decode()
        content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text or "what is this?"}]
        body = {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 4, "stream": stream}
        response = client.post("/v1/chat/completions", content=json.dumps(body))
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        check_response(response)

    run()
    print("images", sorted(statuses.items()))
    assert statuses.get(200, 0) >= 20 and statuses.get(400, 0) >= 10, statuses  # answered and refused both
