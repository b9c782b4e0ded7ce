"""Frozen pretrained parts load faithfully or fail naming the weights transformers would re-initialise."""

import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, Blip2VisionModel, LlamaConfig, LlamaForCausalLM

import tiny
from lyrics.models.conditional_generation import LyricsForConditionalGeneration
from lyrics.models.image_encoder import ImageEncoder
from lyrics.models.loading import MissingWeightsError, check_loading_info, load_pretrained
from lyrics.refiner.stages import BackendError
from lyrics.refiner.tagging import ClipTagger
from refiner.tinymodels import save_clip


def drop_weight(folder, key):
    """Delete `key` from a saved single-file checkpoint, as a lost or renamed weight would."""
    file = folder / "model.safetensors"
    state = load_file(str(file))
    del state[key]
    save_file(state, str(file), metadata={"format": "pt"})


def test_report_names_a_few_missing_keys_and_the_count():
    missing = {f"layer.{i}.weight" for i in range(7)}
    with pytest.raises(MissingWeightsError, match=r"ckpt: 8 weight\(s\) of Net") as error:
        check_loading_info({"missing_keys": missing, "mismatched_keys": {("head.weight", (2, 3), (3, 3))}}, "Net", "ckpt")
    message = str(error.value)
    assert "head.weight, layer.0.weight, layer.1.weight, layer.2.weight, layer.3.weight, ... (3 more)" in message
    assert "layer.4.weight" not in message
    # unexpected keys (a whole CLIP read as its vision tower) are normal
    check_loading_info({"missing_keys": set(), "unexpected_keys": {"text_model.x"}, "mismatched_keys": set()}, "Net", "ckpt")


def test_image_encoder_refuses_a_tower_with_a_deleted_weight(tmp_path):
    tiny.save_vision(tmp_path)
    drop_weight(tmp_path, "encoder.layers.1.mlp.fc2.weight")
    with pytest.raises(MissingWeightsError, match=r"1 weight\(s\) of CLIPVisionModel .*: encoder\.layers\.1\.mlp\.fc2\.weight\."):
        ImageEncoder.from_pretrained(str(tmp_path))


def test_blip2_folder_read_as_a_bare_tower_is_refused(tmp_path):
    # what `Blip2VisionModel.from_pretrained(blip2_folder)` does: no key matches, all re-initialised
    tiny.save_transformers_blip2("Blip2ForConditionalGeneration", tmp_path)
    n = len(Blip2VisionModel(tiny.blip2_config().vision_config).state_dict())
    with pytest.raises(MissingWeightsError, match=rf"{n} weight\(s\) of Blip2VisionModel .*embeddings\.class_embedding"):
        load_pretrained(Blip2VisionModel, tmp_path)


def test_blip2_folder_with_a_deleted_vision_weight_is_refused(tmp_path):
    tiny.save_transformers_blip2("Blip2ForConditionalGeneration", tmp_path)
    drop_weight(tmp_path, "vision_model.post_layernorm.weight")
    with pytest.raises(MissingWeightsError, match=r"1 weight\(s\) of Blip2VisionModel .*: post_layernorm\.weight\."):
        ImageEncoder.from_pretrained(str(tmp_path))


def test_llm_with_a_deleted_weight_is_refused_by_from_components(tmp_path):
    tiny.save_llm(tmp_path / "llm", tiny.llm_tokenizer())
    drop_weight(tmp_path / "llm", "model.layers.1.mlp.up_proj.weight")
    with pytest.raises(MissingWeightsError, match=re.escape("model.layers.1.mlp.up_proj.weight")):
        LyricsForConditionalGeneration.from_components(tiny.lyrics_config(), tmp_path / "llm")


def test_tied_output_embeddings_are_not_missing(tmp_path):
    # a checkpoint with tied embeddings stores no lm_head; transformers ties it, it is not missing
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=20, num_hidden_layers=1, num_attention_heads=2, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(str(tmp_path))
    assert not any(k.startswith("lm_head") for k in load_file(str(tmp_path / "model.safetensors")))
    llm = load_pretrained(AutoModelForCausalLM, tmp_path)
    assert llm.lm_head.weight.data_ptr() == llm.model.embed_tokens.weight.data_ptr()


def test_refiner_clip_tagger_with_a_deleted_weight_is_a_backend_error(tmp_path):
    save_clip(tmp_path)
    drop_weight(tmp_path, "text_projection.weight")
    vocab = tmp_path / "tags.txt"
    vocab.write_text("red circle\n")
    with pytest.raises(BackendError, match=r"cannot load CLIP .*1 weight\(s\) of CLIPModel .*text_projection\.weight"):
        ClipTagger(str(tmp_path), vocab)


def test_a_complete_checkpoint_loads_unchanged(tmp_path):
    saved = tiny.save_llm(tmp_path, tiny.llm_tokenizer())
    loaded = load_pretrained(AutoModelForCausalLM, tmp_path)
    for key, value in saved.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
