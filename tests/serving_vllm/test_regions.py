"""`lyrics serve`'s regions on vLLM (`lyrics.serving_vllm.regions`), tested without vLLM: the prompt
ids the plugin's processor makes from vLLM's (the chat template's text tokenised whole) equal the
ones `LyricsPipeline.conversation` and the processor give `lyrics serve`, with SmolLM2's real
tokenizer and ChatML template; bad input is refused as the pipeline refuses it; the HTTP middleware
moves `lyrics serve`'s body fields into `mm_processor_kwargs`. Through vLLM itself:
`test_vllm_equivalence.py`."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from lyrics.inference.inputs import InputError
from lyrics.serving_vllm.regions import MIDDLEWARE, RegionPrompt, RegionsMiddleware, move_regions, region_options

SIZE = (96, 80)
# (earlier turns as OpenAI messages, the last question, regions, region_format, system prompt)
CASES = [
    ([], "What is the object <region>?", [[8, 8, 40, 40]], "pixels", None),
    ([], "What colour are these objects?", [[10, 20, 50, 60], [40, 8, 90, 70]], "pixels", None),
    ([], "Describe <region> and <region>", [[100, 100, 500, 500], [400, 300, 990, 800]], "0-1000", "Answer briefly."),
    ([("user", "What is in the image?"), ("assistant", "a circle")], "And what is this?", [[0.1, 0.25, 0.5, 0.75]], "0-1", None),
    ([("user", "What is the object <region>?"), ("assistant", "a circle")], "And what colour is it?", None, "pixels", None),  # history only
    ([], "How many objects are there?", None, "pixels", None),  # no regions: the ids are vLLM's own
]  # fmt: skip


@pytest.fixture(scope="module")
def chatml(tmp_path_factory):
    """(processor with SmolLM2's tokenizer and ChatML, empty system prompt; the plugin's chat template)."""
    from transformers import AutoTokenizer

    from lyrics.models.processing import ChatTemplate, LyricsProcessor, ProcessorConfig
    from lyrics.serving_vllm.folder import chat_template
    from lyrics.toyworld.standins.smollm import MissingModelError, convert_smollm2

    try:
        smollm = convert_smollm2(tmp_path_factory.mktemp("smollm2"))
    except MissingModelError as exc:
        pytest.skip(f"SmolLM2's tokenizer: {exc}")
    proc = LyricsProcessor(AutoTokenizer.from_pretrained(str(smollm)), ProcessorConfig(num_image_tokens=1, template=ChatTemplate("tokenizer", system="")))
    folder = tmp_path_factory.mktemp("proc")
    proc.save_pretrained(folder)
    return proc, chat_template(folder)


def vllm_ids(proc, jinja, history, question, system) -> list[int]:
    """What vLLM's chat renderer hands the processor: the placeholder before the first user text,
    the template's text tokenised whole, without added special tokens (`get_default_tok_params`)."""
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": role, "content": text} for role, text in history] + [{"role": "user", "content": question}]
    first = next(m for m in messages if m["role"] == "user")
    first["content"] = "<image>\n" + first["content"]
    rendered = proc.tokenizer.apply_chat_template(messages, chat_template=jinja, tokenize=False, add_generation_prompt=True)
    return proc.tokenizer(rendered, add_special_tokens=False)["input_ids"]


def pipeline_ids(proc, history, question, regions, region_format, system) -> list[int]:
    """`lyrics serve`'s: `LyricsPipeline.conversation` (regions rendered in the last question), then the processor."""
    from lyrics.inference.pipeline import ChatRequest, LyricsPipeline

    pipe = SimpleNamespace(processor=proc, coordinate_format="int1000", spatial_style="paper")
    turns = [{"from": "human" if role == "user" else "gpt", "value": text} for role, text in history]
    request = ChatRequest(image=None, prompt=question, history=turns or None, regions=regions, region_format=region_format, system=system)
    conversation = LyricsPipeline.conversation(pipe, request, SimpleNamespace(width=SIZE[0], height=SIZE[1]))
    proc = proc.with_system(system)  # a request's system prompt replaces the checkpoint's
    return proc.encode(conversation, add_generation_prompt=True)[0]


@pytest.mark.parametrize("case", CASES, ids=["placeholder", "no-placeholder", "0-1000-system", "0-1-dialogue", "history-only", "none"])
def test_the_processors_prompt_ids_with_regions_are_lyrics_serves(chatml, case):
    proc, jinja = chatml
    history, question, regions, region_format, system = case
    ours = RegionPrompt(proc, "int1000", "paper")(vllm_ids(proc, jinja, history, question, system), regions, region_format, SIZE)
    assert ours == pipeline_ids(proc, history, question, regions, region_format, system)
    if regions:
        assert "<Bbox>" in proc.tokenizer.decode(ours) and "<region>" not in proc.tokenizer.decode(ours).rsplit("user", 1)[-1]


@pytest.mark.parametrize(
    "question, regions, region_format",
    [
        ("What is the object <region>?", [[0, 0, 200, 50]], "pixels"),  # outside the image
        ("What is the object <region>?", [[10, 10, 10, 40]], "pixels"),  # no area
        ("What is the object <region>?", [[8, 8, 40, 40], [50, 50, 90, 70]], "pixels"),  # more boxes than placeholders
        ("What is the object <region>?", None, "pixels"),  # a placeholder without a box
        ("What is the object <region>?", [[0, 0, 1.2, 0.5]], "0-1"),
        ("What is the object <region>?", [[0, 0, float("nan"), 40]], "pixels"),
    ],
    ids=["outside", "no-area", "too-many", "too-few", "outside-0-1", "nan"],
)  # fmt: skip
def test_bad_regions_are_refused_with_the_pipelines_message(chatml, question, regions, region_format):
    proc, jinja = chatml
    boxes, fmt = region_options({"regions": regions, "region_format": region_format})  # floats, as `lyrics serve`'s schema reads them
    with pytest.raises(InputError) as pipeline_error:
        pipeline_ids(proc, [], question, boxes, fmt, None)
    with pytest.raises(InputError) as plugin_error:
        RegionPrompt(proc, "int1000", "paper")(vllm_ids(proc, jinja, [], question, None), boxes, fmt, SIZE)
    assert (plugin_error.value.param, plugin_error.value.message) == ("regions", pipeline_error.value.message)


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
