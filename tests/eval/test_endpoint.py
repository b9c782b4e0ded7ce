"""`lyrics eval --endpoint`: the endpoint predictor against a scripted OpenAI server (request shape,
bounded concurrency, retries, error messages, model resolution, run identity), and a tiny checkpoint
served by `lyrics serve` on loopback scoring exactly as local evaluation of the same checkpoint."""

import base64
import io
import json
import re
import threading
import time

import httpx
import pytest
from evalkit import shared_checkpoint, write_benchmark, write_toy_pope
from PIL import Image
from typer.testing import CliRunner

from lyrics.cli import app
from lyrics.eval import command
from lyrics.eval.endpoint import EndpointConfig, EndpointError, EndpointPredictor
from lyrics.eval.predictor import Prompt

URL = "http://fake:9/v1"


class FakeOpenAI:
    """An OpenAI-compatible server for `httpx.MockTransport`: serves `models`, records every chat
    request, answers "answer to <last user text>" after `delay` seconds unless `script` holds the
    next reply (an `httpx.Response`, or an exception to raise)."""

    def __init__(self, models=("tiny",), script=(), delay=0.0, list_status=200):
        self.models, self.script, self.delay, self.list_status = list(models), list(script), delay, list_status
        self.requests, self.in_flight, self.max_in_flight = [], 0, 0
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            assert request.url.path == "/v1/models"
            return httpx.Response(self.list_status, json={"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})
        body = json.loads(request.content)
        with self.lock:
            self.requests.append((request, body))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            step = self.script.pop(0) if self.script else None
        try:
            time.sleep(self.delay)
            if isinstance(step, Exception):
                raise step
            if step is not None:
                return step
            last = body["messages"][-1]["content"]
            text = last if isinstance(last, str) else " ".join(p["text"] for p in last if p["type"] == "text")
            return completion(f"answer to {text}")
        finally:
            with self.lock:
                self.in_flight -= 1


def completion(text: str, **extra) -> httpx.Response:
    return httpx.Response(200, json={"id": "c", "object": "chat.completion", "model": "tiny", **extra,
                                     "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})  # fmt: skip


def refusal(status: int, message: str, **headers) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}, headers=headers)


def predictor(fake, sleeps=None, **config) -> EndpointPredictor:
    config = {"model": "tiny", "retries": 2, **config}
    return EndpointPredictor(EndpointConfig(URL, **config), transport=httpx.MockTransport(fake), sleep=(sleeps if sleeps is not None else []).append)


def ask(text: str, image, **extra) -> Prompt:
    return Prompt([{"from": "human", "value": f"<image>\n{text}"}], [image], **extra)


@pytest.fixture()
def picture(tmp_path):
    path = tmp_path / "scene.jpg"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(path, quality=90)
    return path


# --- the predictor against a scripted server ------------------------------------------------------
def test_request_carries_turns_images_greedy_settings_and_the_key(picture):
    fake = FakeOpenAI(script=[completion("  <T>cube</T><Bbox>(1,2),(3,4)</Box> ok###ignored ", lyrics={"boxes": [{"tag": "cube", "box": [9, 9, 9, 9]}]})])
    exemplar = Image.new("RGB", (8, 6), (1, 2, 3))
    turns = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "a cube"},
             {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "text only"}, {"from": "human", "value": "And?"}]  # fmt: skip
    with predictor(fake, api_key="sekrit") as p:
        (answer,) = p.predict([Prompt(turns, [exemplar, picture], max_new_tokens=7, stop=("###",), key="q1")])
    # the answer text is the prediction (its markup is what the scorers parse), cut at the stop string
    assert answer.error is None and answer.text == "<T>cube</T><Bbox>(1,2),(3,4)</Box> ok"
    request, body = fake.requests[0]
    assert str(request.url) == URL + "/chat/completions" and request.headers["authorization"] == "Bearer sekrit"
    assert body["model"] == "tiny" and body["max_tokens"] == 7 and body["temperature"] == 0 and body["stop"] == ["###"]
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    first, _, second, _, last = body["messages"]
    assert [part["type"] for part in first["content"]] == ["image_url", "text"]
    assert first["content"][1]["text"] == "What is it?"  # no placeholder, no newline: the server writes its own
    sent = first["content"][0]["image_url"]["url"]
    assert sent.startswith("data:image/png;base64,")  # an in-memory image goes as lossless PNG
    assert Image.open(io.BytesIO(base64.b64decode(sent.split(",", 1)[1]))).tobytes() == exemplar.tobytes()
    assert second["content"][0]["image_url"]["url"] == "data:image/jpeg;base64," + base64.b64encode(picture.read_bytes()).decode()
    assert last["content"] == "And?"  # a text-only turn is plain content


def test_at_most_concurrency_requests_are_in_flight_and_answers_keep_prompt_order(picture):
    fake = FakeOpenAI(delay=0.05)
    with predictor(fake, concurrency=3) as p:
        answers = p.predict([ask(f"question {i}", picture) for i in range(9)])
    assert [a.text for a in answers] == [f"answer to question {i}" for i in range(9)]
    assert fake.max_in_flight == 3


def test_connection_errors_5xx_and_429_are_retried_with_backoff(picture):
    fake = FakeOpenAI(script=[refusal(503, "busy"), httpx.ConnectError("refused"), refusal(429, "queue full", **{"Retry-After": "7"})])
    sleeps = []
    with predictor(fake, sleeps, retries=3) as p:
        (answer,) = p.predict([ask("colour?", picture)])
    assert answer.text == "answer to colour?"
    assert sleeps == [1.0, 2.0, 7.0]  # doubling backoff; Retry-After wins when longer

    fake = FakeOpenAI(script=[refusal(500, "boom")] * 3)
    with predictor(fake, retries=2) as p, pytest.raises(EndpointError) as failure:
        p.predict([ask("colour?", picture, key="s7")])
    message = str(failure.value)
    assert URL + "/chat/completions" in message and "failed 3 times" in message and "HTTP 500: boom" in message and "'s7'" in message


def test_a_refusal_names_url_status_sample_and_the_server_message(picture, tmp_path):
    fake = FakeOpenAI(script=[refusal(400, "messages: this model takes one image per conversation, got 2")])
    with predictor(fake) as p, pytest.raises(EndpointError) as failure:
        p.predict([ask("q", picture, key="s1")])
    assert str(failure.value) == f"{URL}/chat/completions answered HTTP 400 for sample 's1': messages: this model takes one image per conversation, got 2"
    assert len(fake.requests) == 1  # a 4xx is not retried

    fake = FakeOpenAI(script=[httpx.Response(400, json={"object": "error", "message": "prompt too long", "code": 400})])  # vLLM's older shape
    with predictor(fake) as p, pytest.raises(EndpointError, match="HTTP 400 for a prompt: prompt too long$"):
        p.predict([ask("q", picture)])

    fake = FakeOpenAI(script=[httpx.Response(401, text="nope")])
    with predictor(fake) as p, pytest.raises(EndpointError, match=r"HTTP 401 .*--api-key or \$LYRICS_API_KEY.*nope"):
        p.predict([ask("q", picture)])

    fake = FakeOpenAI(script=[httpx.Response(200, json={"choices": []})])
    with predictor(fake) as p, pytest.raises(EndpointError, match=r"without choices\[0\]\.message\.content"):
        p.predict([ask("q", picture)])

    # an unreadable image fails only its own prompt (as local evaluation); nothing is sent for it
    fake = FakeOpenAI()
    with predictor(fake) as p:
        missing, good = p.predict([ask("q", tmp_path / "gone.jpg"), ask("q", picture)])
        assert missing.text == "" and missing.error.startswith(f"{tmp_path / 'gone.jpg'}: cannot read file")
        assert good.error is None and len(fake.requests) == 1
        with pytest.raises(ValueError, match="holds 1 <image> placeholders but 2 images"):
            p.predict([Prompt([{"from": "human", "value": "<image>\nq"}], [picture, picture])])


def test_the_model_is_checked_against_the_endpoint_s_list(tmp_path):
    assert predictor(FakeOpenAI(models=["only"]), model=None).model == "only"
    assert predictor(FakeOpenAI(models=["./runs/merged"]), model="runs/merged").model == "./runs/merged"  # a Path option drops "./"
    with pytest.raises(EndpointError, match=r"serves \['a', 'b'\]; choose one with --model NAME"):
        predictor(FakeOpenAI(models=["a", "b"]), model=None)
    with pytest.raises(EndpointError, match=r"does not serve a model named 'other'; it serves \['tiny'\]$"):
        predictor(FakeOpenAI(), model="other")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(EndpointError, match="local checkpoint folder: --endpoint and a local checkpoint are mutually exclusive"):
        EndpointPredictor(EndpointConfig(URL, model=str(folder)), transport=httpx.MockTransport(FakeOpenAI()), local_checkpoint=True)
    # an endpoint without GET /models is trusted with the given name, and needs one
    assert predictor(FakeOpenAI(list_status=404), model="x").model == "x"
    with pytest.raises(EndpointError, match="lists no models .*--model NAME"):
        predictor(FakeOpenAI(list_status=404), model=None)
    with pytest.raises(ValueError, match="--endpoint must start with http"):
        EndpointConfig("localhost:8000/v1")
    assert EndpointConfig(URL + "/chat/completions/").endpoint == URL + "/chat/completions"


def test_run_records_endpoint_and_model_and_refuses_to_resume_another(tmp_path):
    pope = write_toy_pope(tmp_path / "pope")
    fake = FakeOpenAI(models=["tiny", "other"])

    def run(model):
        endpoint = {"url": URL, "concurrency": 2, "transport": httpx.MockTransport(fake)}
        return command.run_benchmark(model, "pope", pope, split="random", out=tmp_path / "out", endpoint=endpoint, console=_Quiet())

    (first,) = run("tiny")
    results = json.loads((first.run_dir / "results.json").read_text())
    assert results["model"] == f"{URL}/models/tiny" and results["count"] == 6 and results["errors"] == 0
    assert json.loads((first.run_dir / "run.json").read_text())["model"] == f"{URL}/models/tiny"
    asked = len(fake.requests)
    (again,) = run("tiny")
    assert again.computed == 0 and again.reused == 6 and len(fake.requests) == asked  # resumed, nothing asked again
    with pytest.raises(ValueError, match=re.escape(f"model: '{URL}/models/tiny' there, '{URL}/models/other' now")):
        run("other")


def test_cli_refuses_local_checkpoint_options_with_an_endpoint(tmp_path):
    pope = write_toy_pope(tmp_path / "pope")
    base = ["eval", "--benchmark", "pope", "--data", str(pope), "--split", "random", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*base, "--endpoint", URL, "--model", "tiny", "--refiner-store", str(tmp_path), "--dtype", "bfloat16"])
    assert result.exit_code == 2
    assert "--endpoint scores a served model: --refiner-store, --dtype apply to a local checkpoint" in result.output
    result = CliRunner().invoke(app, ["eval", "--endpoint", URL, "--benchmark", "retrieval", "--data", str(pope)])
    assert result.exit_code == 2 and "retrieval scores a stage-1 checkpoint" in result.output
    result = CliRunner().invoke(app, base)
    assert result.exit_code == 2 and "needs --model, --benchmark and --data (or --endpoint URL in place of --model" in result.output
    result = CliRunner().invoke(app, [*base, "--endpoint", URL, "--concurrency", "0"])
    assert result.exit_code == 2 and "--concurrency" in result.output
    assert not (tmp_path / "out").exists()


class _Quiet:
    def print(self, *args, **kwargs):
        pass


# --- lyrics serve on loopback against local evaluation -------------------------------------------
@pytest.fixture(scope="module")
def served():
    """`lyrics serve`'s app over the shared tiny checkpoint, on a loopback port (uvicorn in a thread)."""
    from lyrics.inference import LyricsPipeline
    from lyrics.inference.limits import ServerLimits
    from lyrics.inference.server import create_app, serve_in_background

    ckpt = shared_checkpoint()
    app_ = create_app(LyricsPipeline.from_pretrained(ckpt), "tiny", ServerLimits(batch_window_ms=5), api_key="sekrit")
    with serve_in_background(app_) as url:
        yield ckpt, url + "/v1"


def _predictions(run_dir):
    lines = (run_dir / "predictions.seed0.shard0of1.jsonl").read_text().splitlines()
    return {r["id"]: r["prediction"] for r in map(json.loads, lines)}


@pytest.mark.parametrize("benchmark", ["pope", "refcoco"])
def test_scoring_through_lyrics_serve_equals_local_evaluation(served, benchmark, tmp_path, monkeypatch):
    ckpt, url = served
    if benchmark == "pope":
        data, images, split = write_toy_pope(tmp_path / "data"), None, "random"
    else:
        data, images, split = write_benchmark(benchmark, tmp_path / "data")
    args = ["eval", "--benchmark", benchmark, "--data", str(data), "--split", split, "--max-new-tokens", "6", "--batch-size", "4"]
    args += ["--images", str(images)] if images else []
    local = CliRunner().invoke(app, [*args, "--model", str(ckpt), "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    monkeypatch.setenv("LYRICS_API_KEY", "sekrit")
    remote = [*args, "--endpoint", url, "--model", "tiny", "--concurrency", "3", "--out", str(tmp_path / "served")]
    result = CliRunner().invoke(app, remote)
    assert result.exit_code == 0, result.output

    run = f"{benchmark}-{split}-0shot"
    mine, theirs = (json.loads((tmp_path / o / run / "results.json").read_text()) for o in ("local", "served"))
    assert _predictions(tmp_path / "served" / run) == _predictions(tmp_path / "local" / run)
    assert theirs["metrics"] == mine["metrics"] and theirs["count"] == mine["count"] > 0 and theirs["errors"] == 0
    assert theirs["model"] == f"{url}/models/tiny" and mine["model"] == str(ckpt.resolve())
    assert any(_predictions(tmp_path / "local" / run).values())  # the answers compared are not all empty

    again = CliRunner().invoke(app, remote)
    assert again.exit_code == 0 and f"0 predicted, {mine['count']} already done" in again.output


def test_lyrics_serve_refusals_reach_the_user_with_url_and_status(served, tmp_path, monkeypatch):
    _, url = served
    pope = write_toy_pope(tmp_path / "pope", images=2)
    args = ["eval", "--endpoint", url, "--benchmark", "pope", "--data", str(pope), "--split", "random", "--out", str(tmp_path / "out")]
    monkeypatch.delenv("LYRICS_API_KEY", raising=False)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and f"{url}/models answered HTTP 401" in result.output and "--api-key" in result.output
    # lyrics serve takes one image per conversation: a few-shot prompt is refused, and says so
    result = CliRunner().invoke(app, [*args, "--api-key", "sekrit", "--shots", "1", "--seeds", "0", "--max-new-tokens", "3"])
    assert result.exit_code == 2
    assert f"{url}/chat/completions answered HTTP 400" in result.output and "one image per conversation" in result.output
