import pytest
import torch

import tiny
from lyrics.models.mqformer import MQFormerModel, as_attention_mask
from lyrics.training.trainer import enable_activation_checkpointing


@pytest.fixture
def model():
    return MQFormerModel(tiny.mqformer_config()).eval()


def test_output_shapes(model):
    out = model(image_embeds=tiny.image_embeds(), local_features=tiny.local_features(), input_ids=tiny.text_ids())
    assert out.visual_query_output.shape == (2, 4, tiny.HIDDEN)
    assert out.grounding_query_output.shape == (2, 3, tiny.HIDDEN)
    assert out.query_output.shape == (2, 7, tiny.HIDDEN)
    assert out.text_output.shape == (2, 7, tiny.HIDDEN)
    assert out.last_hidden_state.shape == (2, 14, tiny.HIDDEN)


def test_padded_objects_are_invisible_and_real_ones_visible(model):
    feats = tiny.local_features(objects=5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    base = model(image_embeds=tiny.image_embeds(), local_features=feats, local_attention_mask=mask)
    padded = feats.clone()
    padded[0, 3:] = 100 * tiny.local_features(batch=1, objects=2, seed=8)[0]
    same = model(image_embeds=tiny.image_embeds(), local_features=padded, local_attention_mask=mask)
    torch.testing.assert_close(same.query_output, base.query_output, rtol=0, atol=1e-6)
    real = feats.clone()
    real[0, 1] = tiny.local_features(batch=1, objects=1, seed=7)[0, 0]  # not a uniform shift: LayerNorm removes those
    changed = model(image_embeds=tiny.image_embeds(), local_features=real, local_attention_mask=mask)
    assert (changed.grounding_query_output[0] - base.grounding_query_output[0]).abs().max() > 1e-3
    # the other image in the batch is untouched
    torch.testing.assert_close(changed.query_output[1], base.query_output[1])


def test_images_without_objects_give_finite_outputs(model):
    mask = torch.zeros(2, 5, dtype=torch.long)
    out = model(image_embeds=tiny.image_embeds(), local_features=tiny.local_features(), local_attention_mask=mask)
    assert torch.isfinite(out.query_output).all()
    empty = model(image_embeds=tiny.image_embeds(), local_features=torch.zeros(2, 0, tiny.LOCAL_WIDTH))
    assert torch.isfinite(empty.query_output).all()


def test_visual_queries_read_image_and_grounding_queries_read_objects(model):
    base = model(image_embeds=tiny.image_embeds(), local_features=tiny.local_features())
    other_image = model(image_embeds=tiny.image_embeds(seed=9), local_features=tiny.local_features())
    other_objects = model(image_embeds=tiny.image_embeds(), local_features=tiny.local_features(seed=9))
    assert (other_image.visual_query_output - base.visual_query_output).abs().max() > 1e-3
    assert (other_objects.grounding_query_output - base.grounding_query_output).abs().max() > 1e-3


def test_query_ffn_is_shared_by_both_query_sets_and_text_has_its_own(model):
    inputs = dict(image_embeds=tiny.image_embeds(), local_features=tiny.local_features(), input_ids=tiny.text_ids())
    base = model(**inputs)
    with torch.no_grad():
        model.encoder.layer[-1].intermediate_query.dense.bias.add_(0.5)
    changed = model(**inputs)
    assert (changed.visual_query_output - base.visual_query_output).abs().max() > 1e-3
    assert (changed.grounding_query_output - base.grounding_query_output).abs().max() > 1e-3
    # the last layer's query FFN cannot reach the text through attention any more
    torch.testing.assert_close(changed.text_output, base.text_output)


def test_full_three_dimensional_mask_is_respected(model):
    ids = tiny.text_ids()
    length = 7 + ids.shape[1]
    mask = torch.ones(2, length, length)
    mask[:, :7, 7:] = 0  # queries do not see the text
    base = model(image_embeds=tiny.image_embeds(), local_features=tiny.local_features(), input_ids=ids, attention_mask=mask)
    other_text = ids.clone()
    other_text[:, 0] = (other_text[:, 0] + 1) % 90 + 4
    changed = model(image_embeds=tiny.image_embeds(), local_features=tiny.local_features(), input_ids=other_text, attention_mask=mask)
    torch.testing.assert_close(changed.query_output, base.query_output, rtol=0, atol=1e-6)
    assert (changed.text_output - base.text_output).abs().max() > 1e-3


def test_cached_query_pass_then_text_equals_one_joint_pass(model):
    """BLIP-2's ITG: keys/values of a query-only pass let the text run afterwards."""
    ids = tiny.text_ids()
    queries = model(image_embeds=tiny.image_embeds(), local_features=tiny.local_features(), use_cache=True)
    nq, nt = 7, ids.shape[1]
    causal = torch.tril(torch.ones(nt, nt))
    text_mask = torch.cat([torch.ones(nt, nq), causal], dim=1).expand(2, -1, -1)
    text = model(input_ids=ids, cache=queries.cache, attention_mask=text_mask)

    joint_mask = torch.zeros(nq + nt, nq + nt)
    joint_mask[:nq, :nq] = 1  # queries see only queries
    joint_mask[nq:] = torch.cat([torch.ones(nt, nq), causal], dim=1)
    joint = model(
        image_embeds=tiny.image_embeds(), local_features=tiny.local_features(), input_ids=ids,
        attention_mask=joint_mask.expand(2, -1, -1),
    )
    torch.testing.assert_close(text.text_output, joint.text_output, rtol=1e-5, atol=1e-5)
    assert len(queries.cache) == 3 and queries.cache[0][0].shape == (2, 4, nq, 8)


def test_lm_head_is_tied_to_word_embeddings(model):
    hidden = torch.randn(2, 3, tiny.HIDDEN)
    logits = model.lm_logits(hidden)
    assert logits.shape == (2, 3, tiny.VOCAB)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[5] += torch.randn(tiny.HIDDEN)
    changed = model.lm_logits(hidden)
    assert (changed[..., 5] - logits[..., 5]).abs().max() > 1e-3
    torch.testing.assert_close(changed[..., 6], logits[..., 6])
    assert not any("decoder" in name for name, _ in model.named_parameters())


def test_zero_grounding_queries_remove_every_grounding_part():
    model = MQFormerModel(tiny.mqformer_config(num_grounding_query_tokens=0))
    names = [name for name, _ in model.named_parameters()]
    assert not any("grounding" in n or "local_layernorm" in n for n in names)
    out = model(image_embeds=tiny.image_embeds())
    assert out.grounding_query_output is None and out.query_output.shape == (2, 4, tiny.HIDDEN)


def test_grounding_cross_attention_is_xavier_initialised():
    model = MQFormerModel(tiny.mqformer_config())
    weight = model.encoder.layer[0].grounding_crossattention.attention.key.weight
    bound = (6 / (weight.shape[0] + weight.shape[1])) ** 0.5
    assert weight.abs().max() <= bound and weight.std() > 0.05  # not N(0, 0.02)
    assert model.encoder.layer[0].crossattention.attention.key.weight.std() < 0.03
    assert not hasattr(model.encoder.layer[1], "grounding_crossattention")  # every 2nd layer


def test_gradient_checkpointing_gives_the_same_gradients():
    inputs = dict(image_embeds=tiny.image_embeds(), local_features=tiny.local_features(), input_ids=tiny.text_ids())
    model = MQFormerModel(tiny.mqformer_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).train()
    model(**inputs).last_hidden_state.square().mean().backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    assert enable_activation_checkpointing(model)
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    model(**inputs).last_hidden_state.square().mean().backward()
    for name, grad in plain.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-5, atol=1e-6)


def test_save_and_load_round_trip(tmp_path, model):
    model.save_pretrained(tmp_path)
    loaded = MQFormerModel.from_pretrained(tmp_path).eval()
    assert loaded.config.to_diff_dict() | {"_name_or_path": ""} == model.config.to_diff_dict() | {"_name_or_path": ""}
    inputs = dict(image_embeds=tiny.image_embeds(), local_features=tiny.local_features(), input_ids=tiny.text_ids())
    torch.testing.assert_close(loaded(**inputs).last_hidden_state, model(**inputs).last_hidden_state)


def test_bad_mask_shapes_are_named():
    with pytest.raises(ValueError, match="expected \\(batch, 3, 5\\)"):
        as_attention_mask(torch.ones(2, 3, 4), 3, 5)
    with pytest.raises(ValueError, match="covers 4 keys"):
        as_attention_mask(torch.ones(2, 4), 3, 5)


def test_missing_local_features_is_a_clear_error(model):
    with pytest.raises(ValueError, match="local_features"):
        model(image_embeds=tiny.image_embeds())
