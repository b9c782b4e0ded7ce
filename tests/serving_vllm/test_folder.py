"""What the vLLM plugin is given (`lyrics.serving_vllm.folder`), tested without vLLM: which folders it
serves, and the chat template under which vLLM's renderer gives the processor's own prompt ids."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

import tiny
from lyrics.models.processing import ChatTemplate, LyricsProcessor, ProcessorConfig
from lyrics.serving_vllm.folder import NotAMergedLyricsModel, chat_template, check_merged_folder

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a default assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# (vLLM's messages, the processor's conversation, the request's system prompt); vLLM's renderer puts
# an image's placeholder before the message text, "<image>\n...", as the pipeline does.
DIALOGUES = [
    ([{"role": "user", "content": "<image>\nwhat color is the circle?"}], [{"from": "human", "value": "<image>\nwhat color is the circle?"}], None),
    (
        [{"role": "user", "content": "<image>\nis there a red square?"}, {"role": "assistant", "content": "yes"}, {"role": "user", "content": "how many objects are there?"}],
        [{"from": "human", "value": "<image>\nis there a red square?"}, {"from": "gpt", "value": "yes"}, {"from": "human", "value": "how many objects are there?"}],
        None,
    ),
    ([{"role": "system", "content": "write short answers"}, {"role": "user", "content": "what is left of the star?"}], [{"from": "human", "value": "what is left of the star?"}], "write short answers"),
]  # fmt: skip


def processor(template: ChatTemplate) -> LyricsProcessor:
    tokenizer = tiny.llm_tokenizer()
    tokenizer.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    tokenizer.chat_template = CHATML
    return LyricsProcessor(tokenizer, ProcessorConfig(num_image_tokens=1, template=template))


@pytest.mark.parametrize(
    "template", [ChatTemplate("tokenizer", system=""), ChatTemplate("tokenizer"), ChatTemplate("vicuna"), ChatTemplate("vicuna", system="")],
    ids=["chatml-empty-system", "chatml-default-system", "vicuna", "vicuna-no-system"],
)  # fmt: skip
def test_the_chat_template_renders_the_processors_prompt_ids(tmp_path, template):
    proc = processor(template)
    proc.save_pretrained(tmp_path)
    jinja = chat_template(tmp_path)
    tokenizer = proc.tokenizer
    for messages, conversation, system in DIALOGUES:
        rendered = tokenizer.apply_chat_template(messages, chat_template=jinja, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]  # as the plugin tokenises
        # a request's system prompt replaces the checkpoint's, as `lyrics serve` does
        ours = proc if system is None else LyricsProcessor(tokenizer, replace(proc.config, template=replace(proc.config.template, system=system)))
        assert ids == ours.encode(conversation, add_generation_prompt=True)[0], rendered


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    from inference.tinyckpt import build_checkpoint
    from lyrics.models.conditional_generation import LyricsForConditionalGeneration

    root = tmp_path_factory.mktemp("merged")
    ckpt = build_checkpoint(root)
    LyricsForConditionalGeneration.from_pretrained(ckpt).save_merged(root / "merged", processor=LyricsProcessor.from_pretrained(ckpt))
    return ckpt, root / "merged"


def test_a_merged_folder_is_served_and_a_stage2_checkpoint_is_refused_with_the_merge_command(merged):
    ckpt, folder = merged
    assert check_merged_folder(folder) == folder
    with pytest.raises(NotAMergedLyricsModel, match=rf"adapter/.*run `lyrics merge {ckpt} --out MERGED`"):
        check_merged_folder(ckpt)


def test_a_folder_missing_parts_is_refused_naming_each(merged, tmp_path):
    _, folder = merged
    broken = shutil.copytree(folder, tmp_path / "broken")
    shutil.rmtree(broken / "vision_model")
    (broken / "lyrics_model.safetensors").unlink()
    with pytest.raises(NotAMergedLyricsModel, match=r"missing lyrics_model\.safetensors, vision_model/config\.json, vision_model/\*\.safetensors$"):
        check_merged_folder(broken)
    with pytest.raises(NotAMergedLyricsModel, match="not a folder"):
        check_merged_folder(tmp_path / "nowhere")


def test_other_models_and_instruction_aware_checkpoints_are_refused(merged, tmp_path):
    _, folder = merged
    for name, change, message in (
        ("llama", {"model_type": "llama"}, "model_type is 'llama', not 'lyrics'"),
        ("aware", {"instruction_aware": True}, "instruction_aware checkpoints are not served"),
        ("moved", {"text_model_name_or_path": "/elsewhere/llm"}, "a merged model points at its own language_model/"),
    ):
        copy = shutil.copytree(folder, tmp_path / name)
        config = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(NotAMergedLyricsModel, match=message):
            check_merged_folder(copy)
