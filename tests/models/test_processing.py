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
