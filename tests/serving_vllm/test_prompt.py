"""The vLLM plugin's chat prompts (`lyrics.serving_vllm.prompt`, the renderer's rules), tested without
vLLM: for byte-level BPE (a tiny one with ChatML and Vicuna templates, SmolLM2's real tokenizer) and
SentencePiece (a LLaMA tokenizer trained here, Vicuna's format), the renderer's ids with the
processor's image ids in place of `<image>` (what vLLM's prompt update does) equal the ids `lyrics
serve` builds for the same request (`build_request` -> `LyricsPipeline.conversation` -> the
processor), regions, system prompts and dialogues included; bad input is refused as `lyrics serve`
refuses it. Through vLLM itself: `test_vllm_equivalence.py`."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from PIL import Image

import tiny
from lyrics.inference.inputs import InputError
from lyrics.inference.limits import ServerLimits
from lyrics.inference.pipeline import LyricsPipeline
from lyrics.inference.schemas import ChatCompletionRequest
from lyrics.inference.server import build_request
from lyrics.models.processing import ChatTemplate, LyricsProcessor, ProcessorConfig
from lyrics.serving_vllm.folder import image_prompt_ids
from lyrics.serving_vllm.prompt import chat_prompt_ids, one_image_token
from lyrics.serving_vllm.regions import region_options
from serving_vllm.chats import data_url

SIZE = (96, 80)
SPATIAL = "<br><T>red circle</T><Bbox>(120,340),(560,780)</Box></br><br><T>blue square</T><Bbox>(600,100),(900,400)</Box></br>"
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a default assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# (earlier turns, the last question, regions, region_format, system prompt, with an image)
CASES = [
    ([], "What colour is the circle?", None, "pixels", None, True),
    ([("user", "Is there a red square?"), ("assistant", "yes")], "Where is it? Give its box.", None, "pixels", None, True),
    ([], "How many objects are there?", None, "pixels", "Answer in one word.", True),
    ([], "Name three colours.", None, "pixels", None, False),
    ([], "What is the object <region>?", [[8, 8, 40, 40]], "pixels", None, True),
    ([], "What colour are these objects?", [[10, 20, 50, 60], [40, 8, 90, 70]], "pixels", None, True),
    ([], "Describe <region> and <region>", [[100, 100, 500, 500], [400, 300, 990, 800]], "0-1000", "Answer briefly.", True),
    ([("user", "What is in the image?"), ("assistant", "a circle")], "And what is this?", [[0.1, 0.25, 0.5, 0.75]], "0-1", None, True),
    ([("user", "What is the object <region>?"), ("assistant", "a circle")], "And what colour is it?", None, "pixels", None, True),
]  # fmt: skip
CASE_IDS = ["image", "dialogue", "system", "text-only", "region", "regions-appended", "0-1000-system", "0-1-dialogue", "history-region"]


def bpe(kind: str) -> LyricsProcessor:
    tokenizer = tiny.llm_tokenizer()
    tokenizer.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    tokenizer.chat_template = CHATML
    return LyricsProcessor(tokenizer, ProcessorConfig(num_image_tokens=3, spatial_text_in_prompt=True, template=ChatTemplate(kind)))


@pytest.fixture(scope="module", params=["chatml", "vicuna", "smollm2", "sentencepiece"])
def processor(request, tmp_path_factory) -> LyricsProcessor:
    if request.param == "chatml":
        return bpe("tokenizer")
    if request.param == "vicuna":
        return bpe("vicuna")
    if request.param == "sentencepiece":  # LLaMA / Vicuna
        tokenizer = tiny.sentencepiece_tokenizer(tmp_path_factory.mktemp("spm"))
        return LyricsProcessor(tokenizer, ProcessorConfig(num_image_tokens=3, spatial_text_in_prompt=True, template=ChatTemplate("vicuna")))
    from transformers import AutoTokenizer

    from lyrics.toyworld.standins.smollm import MissingModelError, convert_smollm2

    try:
        smollm = convert_smollm2(tmp_path_factory.mktemp("smollm2"))
    except MissingModelError as exc:
        pytest.skip(f"SmolLM2's tokenizer: {exc}")
    template = ChatTemplate("tokenizer", system="")  # the quickstart's
    return LyricsProcessor(AutoTokenizer.from_pretrained(str(smollm)), ProcessorConfig(num_image_tokens=3, spatial_text_in_prompt=True, template=template))


def messages(history, question, system, image) -> list[dict]:
    """The request's OpenAI messages: the image, as a data URL, with the first user message."""
    out = [{"role": "system", "content": system}] if system else []
    out += [{"role": role, "content": text} for role, text in history] + [{"role": "user", "content": question}]
    if image is not None:
        first = next(m for m in out if m["role"] == "user")
        first["content"] = [{"type": "image_url", "image_url": {"url": data_url(image)}}, {"type": "text", "text": first["content"]}]
    return out


def lyrics_serve_ids(proc, body: dict, spatial: str) -> list[int]:
    """`lyrics serve`'s request path: `build_request`, `LyricsPipeline.conversation`, the generator's encode."""
    pipe = SimpleNamespace(processor=proc, coordinate_format="int1000", spatial_style="paper")
    request = build_request(ChatCompletionRequest.model_validate(body), ServerLimits(), pipe, 0.0)
    record = SimpleNamespace(width=request.image.width, height=request.image.height) if request.image is not None else None
    dialogue = LyricsPipeline.conversation(pipe, request, record)
    return proc.with_system(request.system).encode(dialogue, [spatial] if record is not None else None, add_generation_prompt=True)[0]


def vllm_ids(proc, body: dict, spatial: str) -> list[int]:
    """The renderer's ids, then vLLM's prompt update: `<image>` -> the image tokens and the spatial line."""
    regions, region_format = region_options({k: body[k] for k in ("regions", "region_format") if k in body})
    has_image = any(isinstance(m["content"], list) for m in body["messages"])
    ids = chat_prompt_ids(proc, body["messages"], SIZE if has_image else None, regions, region_format, "int1000", "paper")
    assert ids.count(proc.image_token_id) == int(has_image)
    image = image_prompt_ids(proc, spatial)
    return [i for t in ids for i in (image if t == proc.image_token_id else [t])]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_the_renderers_prompt_ids_are_lyrics_serves(processor, case):
    history, question, regions, region_format, system, with_image = case
    body = {"model": "m", "messages": messages(history, question, system, Image.new("RGB", SIZE, "white") if with_image else None)}
    if regions:
        body.update(regions=regions, region_format=region_format)
    ours = vllm_ids(processor, body, SPATIAL)
    assert ours == lyrics_serve_ids(processor, body, SPATIAL)
    # an image without objects gets no spatial line, on both sides; with objects the line is there
    assert vllm_ids(processor, body, "") == lyrics_serve_ids(processor, body, "")
    assert (vllm_ids(processor, body, "") != ours) == with_image


def test_the_spatial_line_is_a_piece_of_its_own_which_sentencepiece_needs(tmp_path):
    """Why `LyricsProcessor._spatial_line` exists: SentencePiece tokenises the line and what follows
    it otherwise together than apart (vLLM puts the line in after the renderer's ids), and the
    processor's ids are the apart ones; a byte-level BPE gives the same either way."""
    sp = tiny.sentencepiece_tokenizer(tmp_path / "spm")
    line, rest = f"\nObjects: {SPATIAL}\n", "\nWhat colour is the circle? ASSISTANT:"
    ids = lambda tok, text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert ids(sp, line + rest) != ids(sp, line) + ids(sp, rest)
    proc = LyricsProcessor(sp, ProcessorConfig(num_image_tokens=2, spatial_text_in_prompt=True))
    encoded = proc._encode_text(f"<image>{line}{rest}")
    assert encoded == [proc.image_token_id] * 2 + ids(sp, line) + ids(sp, rest)
    gpt2 = tiny.llm_tokenizer()
    assert ids(gpt2, line + rest) == ids(gpt2, line) + ids(gpt2, rest)


def test_bad_input_is_refused_as_lyrics_serve_refuses_it(processor):
    image = Image.new("RGB", SIZE, "white")
    refused = [
        ({"messages": messages([], "What is the object <region>?", None, image), "regions": [[0, 0, 200, 50]]}, "regions"),  # outside
        ({"messages": messages([], "What is the object <region>?", None, image), "regions": [[8, 8, 40, 40], [50, 50, 90, 70]]}, "regions"),
        ({"messages": messages([], "What is the object <region>?", None, image)}, "regions"),  # a placeholder without a box
        ({"messages": messages([], "What is <region>?", None, None), "regions": [[1, 2, 3, 4]]}, "regions"),  # no image
        ({"messages": messages([], "What is <image> here?", None, image)}, "messages[0].content"),  # the reserved token
        ({"messages": messages([("user", "hi")], "", None, None)[:1] + [{"role": "assistant", "content": "yes"}]}, "messages"),  # ends with the answer
    ]  # fmt: skip
    for body, param in refused:
        body = {"model": "m", **body}
        with pytest.raises(InputError) as serve_error:
            lyrics_serve_ids(processor, body, SPATIAL)
        with pytest.raises(InputError) as plugin_error:
            vllm_ids(processor, body, SPATIAL)
        assert (plugin_error.value.param, plugin_error.value.message) == (param, serve_error.value.message), body


def test_parts_lyrics_serve_does_not_take_are_refused_naming_the_field():
    proc = bpe("tokenizer")
    bad = [{"role": "user", "content": [{"type": "image_embeds", "image_embeds": "..."}, {"type": "text", "text": "hi"}]}]
    with pytest.raises(InputError, match=r"messages\[0\]\.content.*text and image_url parts") as error:
        chat_prompt_ids(proc, bad, SIZE, None, "pixels", "int1000", "paper")
    assert error.value.param.startswith("messages[0].content")
    with pytest.raises(InputError, match="could not be matched"):  # an image vLLM parsed that the messages do not hold
        chat_prompt_ids(proc, [{"role": "user", "content": "hi"}], SIZE, None, "pixels", "int1000", "paper")


def test_one_image_token_collapses_each_expanded_placeholder():
    assert one_image_token([5, 9, 9, 9, 6, 9, 9, 9], 9, 3) == [5, 9, 6, 9]
    assert one_image_token([1, 2], 9, 3) == [1, 2]
    with pytest.raises(ValueError, match="run of 2"):
        one_image_token([9, 9, 1], 9, 3)
