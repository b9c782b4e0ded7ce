"""BLIP-2 weight compatibility: with grounding disabled the MQ-Former computes exactly what
transformers' Blip2QFormerModel computes on the same weights (saved by transformers, loaded through
our import path), for queries alone and for queries + instruction text."""

import re

import pytest
import torch

import tiny
from lyrics.models.blip2_weights import CheckpointError, load_mqformer_from_blip2
from lyrics.models.mqformer import MQFormerModel

ATOL = 1e-5


def blip2_mqformer(**overrides) -> MQFormerModel:
    return MQFormerModel(tiny.mqformer_config(num_grounding_query_tokens=0, **overrides)).eval()


def reference_queries(ref, kind, image):
    qformer = ref.qformer if kind != "Blip2QFormerModel" else ref
    with torch.no_grad():
        return qformer(query_embeds=ref.query_tokens.expand(image.shape[0], -1, -1), encoder_hidden_states=image).last_hidden_state


@pytest.mark.parametrize("kind", ["Blip2Model", "Blip2ForConditionalGeneration", "Blip2ForImageTextRetrieval"])
def test_queries_match_blip2_qformer(tmp_path, kind):
    ref = tiny.save_transformers_blip2(kind, tmp_path)
    model = blip2_mqformer()
    report = load_mqformer_from_blip2(model, tmp_path)
    assert report.format == "transformers"
    assert "mqformer.query_tokens" in report.loaded
    image = tiny.image_embeds()
    with torch.no_grad():
        ours = model(image_embeds=image).query_output
    torch.testing.assert_close(ours, reference_queries(ref, kind, image), rtol=0, atol=ATOL)


def test_standalone_qformer_checkpoint_matches(tmp_path):
    ref = tiny.save_transformers_blip2("Blip2QFormerModel", tmp_path)
    model = blip2_mqformer()
    report = load_mqformer_from_blip2(model, tmp_path)
    # a bare Q-Former has no query tokens and no text embeddings: reported, not silently skipped
    assert "mqformer.query_tokens" in report.newly_initialized
    assert "mqformer.embeddings.word_embeddings.weight" in report.newly_initialized
    image = tiny.image_embeds()
    with torch.no_grad():
        expected = ref(query_embeds=model.query_tokens.expand(2, -1, -1), encoder_hidden_states=image).last_hidden_state
        torch.testing.assert_close(model(image_embeds=image).query_output, expected, rtol=0, atol=ATOL)


def _text_inputs():
    ids = tiny.text_ids()
    text_mask = torch.ones_like(ids)
    text_mask[1, 5:] = 0  # padding in the second instruction
    return ids, text_mask


def test_queries_plus_instruction_text_match_blip2(tmp_path):
    ref = tiny.save_transformers_blip2("Blip2ForImageTextRetrieval", tmp_path)
    model = blip2_mqformer()
    load_mqformer_from_blip2(model, tmp_path)
    image, (ids, text_mask) = tiny.image_embeds(), _text_inputs()
    mask = torch.cat([torch.ones(2, 4, dtype=torch.long), text_mask], dim=1)
    with torch.no_grad():
        embeds = ref.embeddings(input_ids=ids, query_embeds=ref.query_tokens.expand(2, -1, -1))
        expected = ref.qformer(
            query_embeds=embeds, query_length=4, attention_mask=mask, encoder_hidden_states=image
        ).last_hidden_state
        ours = model(image_embeds=image, input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours, expected, rtol=0, atol=ATOL)


def test_instructblip_checkpoint_matches_with_instruction(tmp_path):
    ref = tiny.save_transformers_blip2("InstructBlipForConditionalGeneration", tmp_path)
    model = blip2_mqformer()
    report = load_mqformer_from_blip2(model, tmp_path)
    assert "mqformer.embeddings.word_embeddings.weight" in report.loaded
    image, (ids, text_mask) = tiny.image_embeds(), _text_inputs()
    mask = torch.cat([torch.ones(2, 4, dtype=torch.long), text_mask], dim=1)
    with torch.no_grad():
        expected = ref.qformer(
            input_ids=ids, attention_mask=mask, query_embeds=ref.query_tokens.expand(2, -1, -1), encoder_hidden_states=image
        ).last_hidden_state
        ours = model(image_embeds=image, input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours, expected, rtol=0, atol=ATOL)


# --- LAVIS --------------------------------------------------------------------------------------

_TO_LAVIS = [
    (r"^qformer\.layernorm\.", "Qformer.bert.embeddings.LayerNorm."),
    (r"^embeddings\.", "Qformer.bert.embeddings."),
    (r"^qformer\.encoder\.layer\.(\d+)\.(attention|crossattention)\.attention\.", r"Qformer.bert.encoder.layer.\1.\2.self."),
    (r"^qformer\.encoder\.", "Qformer.bert.encoder."),
    (r"^vision_projection\.", "vision_proj."),
    (r"^text_projection\.", "text_proj."),
    (r"^vision_model\.post_layernorm\.", "ln_vision."),
    (r"^vision_model\.", "visual_encoder."),
]


def to_lavis(state):
    out = {}
    for key, value in state.items():
        for pattern, repl in _TO_LAVIS:
            if re.search(pattern, key):
                key = re.sub(pattern, repl, key)
                break
        out[key] = value.clone()
    return out


def test_lavis_state_dict_loads_to_the_same_outputs(tmp_path):
    ref = tiny.save_transformers_blip2("Blip2ForImageTextRetrieval", tmp_path / "hf")
    lavis = to_lavis(ref.state_dict())
    lavis["Qformer.bert.embeddings.position_ids"] = torch.arange(64)[None]
    lavis["Qformer.cls.predictions.bias"] = torch.randn(tiny.VOCAB)
    lavis["Qformer.cls.predictions.transform.dense.weight"] = torch.randn(tiny.HIDDEN, tiny.HIDDEN)
    lavis["Qformer.cls.predictions.transform.dense.bias"] = torch.randn(tiny.HIDDEN)
    lavis["Qformer.cls.predictions.transform.LayerNorm.weight"] = torch.randn(tiny.HIDDEN)
    lavis["Qformer.cls.predictions.transform.LayerNorm.bias"] = torch.randn(tiny.HIDDEN)
    lavis["Qformer.cls.predictions.decoder.weight"] = lavis["Qformer.bert.embeddings.word_embeddings.weight"]
    lavis["temp"] = torch.tensor(0.07)
    path = tmp_path / "blip2_pretrain.pth"
    torch.save({"model": lavis, "epoch": 3}, path)  # LAVIS's checkpoint layout

    from_hf, from_lavis = blip2_mqformer(), blip2_mqformer()
    load_mqformer_from_blip2(from_hf, tmp_path / "hf")
    report = load_mqformer_from_blip2(from_lavis, path)
    assert report.format == "lavis"
    assert not [k for k in report.newly_initialized]  # LAVIS has the text side and LM head too
    assert any(k.startswith("visual_encoder.") for k in report.unused)
    torch.testing.assert_close(from_lavis.lm_head.bias, lavis["Qformer.cls.predictions.bias"])

    image, (ids, text_mask) = tiny.image_embeds(), _text_inputs()
    mask = torch.cat([torch.ones(2, 4, dtype=torch.long), text_mask], dim=1)
    with torch.no_grad():
        for inputs in (dict(image_embeds=image), dict(image_embeds=image, input_ids=ids, attention_mask=mask)):
            torch.testing.assert_close(
                from_lavis(**inputs).last_hidden_state, from_hf(**inputs).last_hidden_state, rtol=0, atol=ATOL
            )


# --- the authors' released code -----------------------------------------------------------------


def test_released_code_layout_imports_into_released_style_model(tmp_path):
    config = dict(num_grounding_query_tokens=6, local_feature_layernorm=False)
    source = MQFormerModel(tiny.mqformer_config(**config)).eval()
    released = {}
    for key, value in source.state_dict().items():
        if key in ("query_tokens", "grounding_query_tokens"):
            continue
        key = key.replace("grounding_crossattention", "detection_crossattention")
        key = key.replace("embeddings.layernorm", "embeddings.LayerNorm")
        key = key.replace("lm_head.transform", "cls.predictions.transform").replace("lm_head.bias", "cls.predictions.bias")
        prefix = "qformer." if key.startswith("cls.") else "qformer.bert."
        released[prefix + key] = value.clone()
    released["query_tokens"] = torch.cat([source.query_tokens, source.grounding_query_tokens], dim=1).detach().clone()
    from safetensors.torch import save_file

    save_file(released, str(tmp_path / "released.safetensors"))

    model = MQFormerModel(tiny.mqformer_config(**config)).eval()
    report = load_mqformer_from_blip2(model, tmp_path / "released.safetensors")
    assert report.format == "released"
    assert report.newly_initialized == []
    inputs = dict(image_embeds=tiny.image_embeds(), local_features=tiny.local_features(), input_ids=tiny.text_ids())
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).last_hidden_state, source(**inputs).last_hidden_state, rtol=0, atol=0)


# --- grounding parts, reports and errors --------------------------------------------------------


def test_grounding_parts_are_new_and_reported(tmp_path):
    tiny.save_transformers_blip2("Blip2ForImageTextRetrieval", tmp_path)
    model = MQFormerModel(tiny.mqformer_config()).eval()
    report = load_mqformer_from_blip2(model, tmp_path)
    new = set(report.newly_initialized)
    assert "mqformer.grounding_query_tokens" in new
    assert "mqformer.encoder.layer.0.grounding_crossattention.attention.key.weight" in new
    assert "mqformer.local_layernorm.weight" in new
    assert not any("grounding" in k for k in report.loaded)
    assert f"newly initialised: {len(new)}" in report.summary()


def test_grounding_queries_can_start_as_copies_of_the_visual_queries(tmp_path):
    tiny.save_transformers_blip2("Blip2Model", tmp_path)
    model = MQFormerModel(tiny.mqformer_config(num_grounding_query_tokens=6, grounding_query_init="copy"))
    load_mqformer_from_blip2(model, tmp_path)
    torch.testing.assert_close(model.grounding_query_tokens[:, :4], model.query_tokens)
    torch.testing.assert_close(model.grounding_query_tokens[:, 4:], model.query_tokens[:, :2])


def test_added_special_tokens_grow_the_vocabulary(tmp_path):
    ref = tiny.save_transformers_blip2("Blip2ForImageTextRetrieval", tmp_path)
    model = blip2_mqformer(vocab_size=tiny.VOCAB + 5)
    report = load_mqformer_from_blip2(model, tmp_path)
    assert "mqformer.embeddings.word_embeddings.weight" in report.resized
    torch.testing.assert_close(model.embeddings.word_embeddings.weight[: tiny.VOCAB], ref.embeddings.word_embeddings.weight)


def test_shape_mismatch_names_the_key(tmp_path):
    tiny.save_transformers_blip2("Blip2Model", tmp_path)
    model = blip2_mqformer(encoder_hidden_size=16)
    with pytest.raises(CheckpointError, match=r"crossattention\.attention\.key\.weight.*\(32, 24\).*\(32, 16\)"):
        load_mqformer_from_blip2(model, tmp_path)


def test_a_checkpoint_that_is_not_blip2_is_refused(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(**{k: v for k, v in tiny.TINY_LLAMA.items() if k != "model_type"})).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="not a BLIP-2 checkpoint"):
        load_mqformer_from_blip2(blip2_mqformer(), tmp_path)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_never_unpickled(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"query_tokens": torch.zeros(1)}, "payload": _Payload()}, path)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_mqformer_from_blip2(blip2_mqformer(), path)
    assert "must never run" not in capsys.readouterr().out


def test_missing_path_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_mqformer_from_blip2(blip2_mqformer(), tmp_path / "nope.pth")
