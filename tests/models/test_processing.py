import pytest

import tiny
from lyrics.models.processing import IGNORE_INDEX, LyricsProcessor, ProcessorConfig

CONV = [
    {"from": "human", "value": "<image>\nwhat color is the circle?"},
    {"from": "gpt", "value": "red"},
    {"from": "human", "value": "how many squares?"},
    {"from": "gpt", "value": "2"},
]


def processor(**kw):
    return LyricsProcessor(tiny.llm_tokenizer(), ProcessorConfig(num_image_tokens=8, **kw))


def test_loss_only_on_responses_of_every_turn():
    proc = processor()
    ids, labels = proc.encode(CONV)
    supervised = [proc.tokenizer.convert_ids_to_tokens(i) for i, lab in zip(ids, labels) if lab != IGNORE_INDEX]
    assert supervised == ["red", "</s>", "2", "</s>"]
    assert ids.count(proc.image_token_id) == 8
    assert ids[0] == proc.tokenizer.bos_token_id


def test_generation_prompt_ends_with_the_assistant_tag_and_is_left_padded():
    proc = processor()
    batch = proc.generation_batch([CONV[:1], CONV[:3]])
    assert proc.tokenizer.convert_ids_to_tokens(batch["input_ids"][0][-2:].tolist()) == ["assistant", ":"]
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1
    with pytest.raises(ValueError, match="end with a human turn"):
        proc.generation_batch([CONV[:2]])


def test_spatial_text_goes_into_the_prompt_only_when_switched_on():
    spatial = "<br><T>red circle</T><Bbox>(1,2),(3,4)</Box></br>"
    plain = processor().encode(CONV[:2], spatial_text=spatial)[0]
    with_sp = processor(spatial_text_in_prompt=True).encode(CONV[:2], spatial_text=spatial)[0]
    assert len(with_sp) > len(plain)


def test_bad_conversations_are_named():
    proc = processor()
    with pytest.raises(ValueError, match="unknown role 'bot'"):
        proc.encode([{"from": "bot", "value": "x"}])
    two = proc.encode([{"from": "human", "value": "<image> and <image>"}, {"from": "gpt", "value": "x"}])[0]
    assert two.count(proc.image_token_id) == 16  # in-context prompts hold several images


def test_truncation_keeps_the_prompt(tmp_path):
    proc = processor(max_length=60)
    long_answer = [CONV[0], {"from": "gpt", "value": " ".join(["red"] * 100)}]
    ids, labels = proc.encode(long_answer)
    assert len(ids) == 60 and ids.count(proc.image_token_id) == 8
    short = processor(max_length=10)
    with pytest.raises(ValueError, match="prompt alone is longer"):
        short.encode(long_answer)
    proc.save_pretrained(tmp_path)
    again = LyricsProcessor.from_pretrained(tmp_path)
    assert again.encode(CONV) == proc.encode(CONV)


CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are helpful<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def chatml_processor(**kw):
    """A processor whose tokenizer carries a ChatML chat template (as SmolLM2's does)."""
    from lyrics.models.processing import ChatTemplate

    tok = tiny.llm_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.add_tokens(["system", "you", "are"])  # the words of the template's default system prompt
    tok.eos_token = "<|im_end|>"
    tok.chat_template = CHATML
    system = kw.pop("system", None)
    return LyricsProcessor(tok, ProcessorConfig(num_image_tokens=8, template=ChatTemplate(system=system), **kw))


def test_the_tokenizers_chat_template_is_used_when_it_has_one():
    proc = chatml_processor()
    assert proc.config.template.kind == "tokenizer" and processor().config.template.kind == "vicuna"
    ids, labels = proc.encode(CONV)
    tokens = proc.tokenizer.convert_ids_to_tokens(ids)
    # the template's default system prompt, no bos prepended, turns in ChatML
    assert tokens[:3] == ["<|im_start|>", "system", "you"] and "<s>" not in tokens
    supervised = [t for t, lab in zip(tokens, labels) if lab != IGNORE_INDEX]
    assert supervised == ["red", "<|im_end|>", "2", "<|im_end|>"]
    assert ids.count(proc.image_token_id) == 8
    # the ids are the template's own rendering of the whole conversation, image placeholder expanded
    messages = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]} for t in CONV]
    whole = proc.tokenizer.apply_chat_template(messages, tokenize=False)
    expected = proc._encode_text(whole)
    assert ids == expected


def test_chat_template_generation_prompt_system_and_spatial_text(tmp_path):
    spatial = "<br><T>red circle</T><Bbox>(1,2),(3,4)</Box></br>"
    proc = chatml_processor(system="", spatial_text_in_prompt=True)
    ids, labels = proc.encode(CONV[:1], spatial, add_generation_prompt=True)
    tokens = proc.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[:3] == ["<|im_start|>", "system", "<|im_end|>"]  # the default system prompt dropped
    assert tokens[-2:] == ["<|im_start|>", "assistant"] and all(lab == IGNORE_INDEX for lab in labels)
    user = tokens.index("user")
    assert tokens.index("circle") > user and tokens.index("what") > tokens.index("circle")  # list inside the user turn
    batch = proc.generation_batch([CONV[:1], CONV[:3]])
    assert batch["attention_mask"][0, 0] == 0 and batch["input_ids"][0, -1] == batch["input_ids"][1, -1]
    proc.save_pretrained(tmp_path)
    again = LyricsProcessor.from_pretrained(tmp_path)
    assert again.config.template.kind == "tokenizer" and again.encode(CONV) == proc.encode(CONV)


def test_an_old_processor_without_a_template_kind_loads_as_vicuna(tmp_path):
    import json

    proc = processor()
    proc.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    del config["template"]["kind"]
    (tmp_path / "processor_config.json").write_text(json.dumps(config))
    assert LyricsProcessor.from_pretrained(tmp_path).encode(CONV) == proc.encode(CONV)


def test_a_template_kind_the_tokenizer_cannot_serve_is_refused():
    from lyrics.models.processing import ChatTemplate

    with pytest.raises(ValueError, match="has no chat_template"):
        LyricsProcessor(tiny.llm_tokenizer(), ProcessorConfig(num_image_tokens=8, template=ChatTemplate(kind="tokenizer")))
    with pytest.raises(ValueError, match="must be one of"):
        ChatTemplate(kind="chatml")
