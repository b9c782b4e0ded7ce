"""What the vLLM plugin is given (`lyrics.serving_vllm.folder`), tested without vLLM: which folders it
serves, and the chat template under which vLLM's renderer gives the processor's own prompt ids."""

from __future__ import annotations

import json
import re
import shutil

import pytest

import tiny
from lyrics.models.processing import ChatTemplate, LyricsProcessor, ProcessorConfig
from lyrics.serving_vllm.folder import NotAMergedLyricsModel, PromptIdsDiffer, chat_template, check_merged_folder, check_prompt_ids

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
        ours = proc.with_system(system)
        assert ids == ours.encode(conversation, add_generation_prompt=True)[0], rendered


@pytest.mark.parametrize("template", [ChatTemplate("tokenizer", system=""), ChatTemplate("vicuna")], ids=["chatml", "vicuna"])
def test_a_tokenizer_that_gives_the_processors_ids_is_served(tmp_path, template):
    proc = processor(template)
    proc.save_pretrained(tmp_path)
    check_prompt_ids(proc, chat_template(tmp_path), str(tmp_path))  # no refusal


def test_smollm2s_tokenizer_gives_the_processors_ids(tmp_path):
    """The quickstart's LLM: byte-level BPE, ChatML, the quickstart's empty system prompt."""
    from transformers import AutoTokenizer

    from lyrics.toyworld.standins.smollm import MissingModelError, convert_smollm2

    try:
        smollm = convert_smollm2(tmp_path / "smollm2")
    except MissingModelError as exc:
        pytest.skip(f"SmolLM2's tokenizer: {exc}")
    proc = LyricsProcessor(AutoTokenizer.from_pretrained(str(smollm)), ProcessorConfig(num_image_tokens=1, template=ChatTemplate("tokenizer", system="")))
    proc.save_pretrained(tmp_path / "proc")
    check_prompt_ids(proc, chat_template(tmp_path / "proc"), "smollm2")


def test_a_sentencepiece_tokenizer_is_refused_naming_why(tmp_path):
    """LLaMA / Vicuna's SentencePiece tokenizer starts each piece the processor tokenises alone with a
    word boundary, and text after a special token in vLLM's whole text without one: the ids differ,
    so the plugin refuses the folder instead of answering otherwise than `lyrics serve`."""
    tokenizer = tiny.sentencepiece_tokenizer(tmp_path / "spm")
    proc = LyricsProcessor(tokenizer, ProcessorConfig(num_image_tokens=1, template=ChatTemplate("vicuna")))
    proc.save_pretrained(tmp_path / "proc")
    with pytest.raises(PromptIdsDiffer, match=r"LlamaTokenizer.*vLLM gives .*the processor .*SentencePiece.*lyrics serve") as refused:
        check_prompt_ids(proc, chat_template(tmp_path / "proc"), "folder-x")
    assert str(refused.value).startswith("folder-x: ")


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    from inference.tinyckpt import build_checkpoint
    from lyrics.models.conditional_generation import LyricsForConditionalGeneration

    root = tmp_path_factory.mktemp("merged")
    ckpt = build_checkpoint(root)
    LyricsForConditionalGeneration.from_pretrained(ckpt).save_merged(root / "merged", processor=LyricsProcessor.from_pretrained(ckpt))
    return ckpt, root / "merged"


def test_a_merged_folder_is_served_and_a_stage2_checkpoint_given_as_one_is_refused_naming_what_to_run(merged):
    ckpt, folder = merged
    assert check_merged_folder(folder) == folder
    with pytest.raises(NotAMergedLyricsModel, match=rf"adapter/.*`python -m lyrics\.serving_vllm serve {ckpt}`.*run `lyrics merge {ckpt} --out MERGED`"):
        check_merged_folder(ckpt)


def test_the_serve_helper_refuses_a_sentencepiece_folder_before_vllm_starts(merged, tmp_path, capsys):
    from lyrics.serving_vllm.__main__ import main

    folder = tmp_path / "merged"
    shutil.copytree(merged[1], folder)
    shutil.rmtree(folder / "tokenizer")
    tiny.sentencepiece_tokenizer(tmp_path / "spm").save_pretrained(folder / "tokenizer")
    config = json.loads((folder / "processor_config.json").read_text())
    (folder / "processor_config.json").write_text(json.dumps({**config, "template": {"kind": "vicuna"}}))
    assert main(["serve", str(folder)]) == 1  # never reaches vLLM's exec
    assert re.search(rf"error: {re.escape(str(folder))}: vLLM would tokenise this checkpoint's prompts otherwise", capsys.readouterr().err)


def test_a_stage2_checkpoint_is_served_with_its_adapter_on_a_base_folder_written_once(merged, tmp_path):
    from lyrics.serving_vllm.__main__ import serve_args, split_options

    ckpt = shutil.copytree(merged[0], tmp_path / "run1")
    own, rest = split_options(["--lora-name=mine", "--dtype", "float32"])
    args = serve_args(ckpt, own, rest)
    base = ckpt / "vllm_base"
    assert args[args.index("--model") + 1] == str(base) and check_merged_folder(base) == base
    assert args[-7:] == ["--enable-lora", "--lora-modules", f"mine={ckpt / 'adapter'}", "--max-lora-rank", "8", "--dtype", "float32"]
    assert args[args.index("--tokenizer") + 1] == str(base / "tokenizer")
    # the next serve reuses the base; a retrained checkpoint (new trained weights) gets a new one
    (weights,) = (base / "language_model").glob("*.safetensors")
    stamp = weights.stat().st_mtime_ns
    assert serve_args(ckpt, {}, [])[-4:] == ["--lora-modules", f"run1={ckpt / 'adapter'}", "--max-lora-rank", "8"]
    assert weights.stat().st_mtime_ns == stamp
    retrain(ckpt)
    serve_args(ckpt, {}, [])
    assert (base / "lyrics_model.safetensors").read_bytes() == (ckpt / "lyrics_model.safetensors").read_bytes()
    elsewhere = serve_args(ckpt, {"--base": [str(tmp_path / "elsewhere")]}, [])
    assert elsewhere[elsewhere.index("--model") + 1] == str(tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "source.json").is_file()
    with pytest.raises(ValueError, match="only for a stage-2 checkpoint"):
        serve_args(merged[1], {"--lora-name": ["x"]}, [])
    # a folder this checkpoint did not write is never replaced
    with pytest.raises(NotAMergedLyricsModel, match=r"merged exists and is not .*run1's base folder"):
        serve_args(ckpt, {"--base": [str(merged[1])]}, [])


def retrain(ckpt):
    """Change the checkpoint's own trained weights (its projection), as another stage-2 run would."""
    from safetensors.torch import load_file, save_file

    trained = load_file(str(ckpt / "lyrics_model.safetensors"))
    save_file({name: t + 1 if name.startswith("language_projection.") else t for name, t in trained.items()}, str(ckpt / "lyrics_model.safetensors"))


def test_another_checkpoints_adapter_is_served_on_the_base_only_when_all_else_is_the_same(merged, tmp_path):
    from lyrics.serving_vllm.__main__ import serve_args, split_options
    from lyrics.serving_vllm.lora import NotAServableAdapter

    ckpt, same, other = (shutil.copytree(merged[0], tmp_path / name) for name in ("run1", "run2", "run3"))
    config = json.loads((same / "config.json").read_text())
    (same / "config.json").write_text(json.dumps({**config, "lora_r": 16}))  # a LoRA setting may differ
    adapter_config = json.loads((same / "adapter" / "adapter_config.json").read_text())
    (same / "adapter" / "adapter_config.json").write_text(json.dumps({**adapter_config, "r": 16}))
    args = serve_args(ckpt, *split_options(["--adapter", f"second={same}"]))
    assert args[-7:] == ["--lora-modules", f"run1={ckpt / 'adapter'}", f"second={same / 'adapter'}", "--max-lora-rank", "16", "--max-loras", "2"]
    retrain(other)
    with pytest.raises(NotAServableAdapter, match=r"run3's adapter does not fit .*run1's base folder: lyrics_model\.safetensors differ"):
        serve_args(ckpt, *split_options([f"--adapter=third={other}"]))
    with pytest.raises(ValueError, match="give NAME=CKPT"):
        serve_args(ckpt, *split_options(["--adapter", str(other)]))
    with pytest.raises(ValueError, match="--lora-modules: give another checkpoint's adapter as --adapter"):
        serve_args(ckpt, *split_options(["--lora-modules", f"x={other / 'adapter'}"]))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"modules_to_save": ["lm_head"]}, r"adapter_config\.json: modules_to_save \['lm_head'\]"),
        ({"target_modules": ["q_proj", "embed_tokens"]}, r"adapter_config\.json: target_modules \['q_proj', 'embed_tokens'\]"),
        ({"target_modules": ".*proj"}, r"target_modules '\.\*proj'"),
        ({"use_dora": True}, r"adapter_config\.json: use_dora is True"),
        ({"r": 1024}, r"r is 1024"),
    ],
    ids=["modules_to_save", "embedding-target", "regex-target", "dora", "rank"],
)
def test_an_adapter_vllm_cannot_apply_is_refused_naming_the_field(merged, tmp_path, change, message):
    from lyrics.serving_vllm.lora import NotAServableAdapter, check_stage2

    ckpt = shutil.copytree(merged[0], tmp_path / "ckpt")
    assert check_stage2(ckpt).rank == 4
    adapter_config = ckpt / "adapter" / "adapter_config.json"
    adapter_config.write_text(json.dumps({**json.loads(adapter_config.read_text()), **change}))
    with pytest.raises(NotAServableAdapter, match=message):
        check_stage2(ckpt)


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
