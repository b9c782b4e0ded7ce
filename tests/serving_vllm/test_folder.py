"""What the vLLM plugin is given (`lyrics.serving_vllm.folder`), tested without vLLM: which folders it
serves, and the command the serve helper runs. Its prompt ids: `test_prompt.py`."""

from __future__ import annotations

import json
import shutil

import pytest

import tiny
from lyrics.models.processing import LyricsProcessor
from lyrics.serving_vllm.folder import NotAMergedLyricsModel, check_merged_folder

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


def test_the_serve_helper_serves_with_the_plugins_renderer_a_sentencepiece_folder_too(merged, tmp_path):
    """Any tokenizer is served (a LLaMA SentencePiece one here, Vicuna's format): prompts are built by
    the plugin's renderer (`--tokenizer-mode lyrics`), so a chat template or another mode is refused."""
    from lyrics.serving_vllm.__main__ import serve_args

    folder = tmp_path / "merged"
    shutil.copytree(merged[1], folder)
    shutil.rmtree(folder / "tokenizer")
    tiny.sentencepiece_tokenizer(tmp_path / "spm").save_pretrained(folder / "tokenizer")
    config = json.loads((folder / "processor_config.json").read_text())
    (folder / "processor_config.json").write_text(json.dumps({**config, "template": {"kind": "vicuna"}}))
    args = serve_args(folder, {}, ["--dtype", "float32"])
    assert args[args.index("--model") + 1] == str(folder) and args[args.index("--tokenizer") + 1] == str(folder / "tokenizer")
    assert args[args.index("--tokenizer-mode") + 1] == "lyrics" and "--chat-template" not in args and args[-2:] == ["--dtype", "float32"]
    for option in (["--chat-template", "t.jinja"], ["--tokenizer-mode=hf"]):
        with pytest.raises(ValueError, match="built by its own renderer"):
            serve_args(folder, {}, option)


def test_quantize_int8_hands_vllm_the_projects_torchao_config_and_what_vllm_cannot_do_is_refused(merged):
    """`--quantize int8` becomes vLLM's torchao method with `lyrics.inference.quantize`'s own config
    (answers: test_vllm_quantize.py); nf4, a stage-2 checkpoint (the adapter would stay unquantised
    beside the base) and a clash with vLLM's own flags are refused before vLLM starts."""
    from torchao.core.config import config_from_dict

    from lyrics.serving_vllm.__main__ import serve_args, split_options

    ckpt, folder = merged
    args = serve_args(folder, *split_options(["--quantize", "int8", "--dtype", "float32"]))
    assert args[args.index("--quantization") + 1] == "torchao" and args[-2:] == ["--dtype", "float32"]
    config = config_from_dict(json.loads(json.loads(args[args.index("--hf-overrides") + 1])["quantization_config_dict_json"]))
    assert type(config).__name__ == "Int8WeightOnlyConfig" and config.set_inductor_config is False
    assert "--quantization" not in serve_args(folder, *split_options(["--quantize=none"]))
    with pytest.raises(ValueError, match="no bitsandbytes.*--quantize int8"):
        serve_args(folder, *split_options(["--quantize", "nf4"]))
    with pytest.raises(ValueError, match=f"serve a merged folder \\(`lyrics merge {ckpt} --out MERGED`\\)"):
        serve_args(ckpt, *split_options(["--quantize", "int8"]))
    for clash in (["--quantization", "fp8"], ["-q=fp8"], ["--hf-overrides", "{}"]):
        with pytest.raises(ValueError, match=f"drop {clash[0].partition('=')[0]}"):
            serve_args(folder, *split_options(["--quantize", "int8", *clash]))


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
