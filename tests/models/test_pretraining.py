"""Stage 1: every objective's mask is proven by perturbation (an invisible token changes nothing, a
visible one changes the output), the losses train, and the ablation switches do what Table 4 says."""

import pytest
import torch

import tiny
from lyrics.models.pretraining import LyricsForPretraining
from lyrics.training.collate import PretrainingCollator, PretrainingExample

TOL = dict(rtol=0, atol=1e-5)


def make(**overrides):
    tok = tiny.mqformer_tokenizer()
    config = tiny.lyrics_config(tok, **overrides)
    model = LyricsForPretraining(config).eval()
    examples = [
        PretrainingExample(
            caption=["a red circle left of a blue square", "two green stars", "a small purple hexagon"][k],
            record=tiny.refiner_record(f"img{k}", objects=3, seed=k),
            image_embeds=torch.randn(17, 32, generator=torch.Generator().manual_seed(k)),
            index=k,
        )
        for k in range(3)
    ]
    batch = PretrainingCollator(tok, config)(examples)
    image = model.image_layernorm(batch["image_embeds"])
    return model, batch, image


def other_objects(batch):
    # not an affine change: the local-feature LayerNorm would undo that
    return batch["local_features"] + torch.randn(batch["local_features"].shape, generator=torch.Generator().manual_seed(5))


def changed(a, b):
    return (a - b).abs().max() > 1e-4


def bump(ids, col):
    out = ids.clone()
    out[:, col] = torch.where(out[:, col] == 10, 11, 10)  # another ordinary word
    return out


def test_itc_text_side_keeps_spatial_text_and_caption_apart():
    model, b, _ = make()
    base = model.text_pass(b["caption_ids"], b["caption_attention_mask"], b["spatial_ids"], b["spatial_attention_mask"])
    ts = b["spatial_ids"].shape[1]
    cap = model.text_pass(bump(b["caption_ids"], 2), b["caption_attention_mask"], b["spatial_ids"], b["spatial_attention_mask"])
    torch.testing.assert_close(cap.text_output[:, :ts], base.text_output[:, :ts], **TOL)
    assert changed(cap.text_output[:, ts:], base.text_output[:, ts:])
    sp = model.text_pass(b["caption_ids"], b["caption_attention_mask"], bump(b["spatial_ids"], 3), b["spatial_attention_mask"])
    torch.testing.assert_close(sp.text_output[:, ts:], base.text_output[:, ts:], **TOL)
    assert changed(sp.text_output[:, :ts], base.text_output[:, :ts])


def test_itm_mask_is_regionalised():
    model, b, image = make()
    args = lambda **kw: dict(  # noqa: E731
        image=kw.get("image", image), local_features=kw.get("local", b["local_features"]),
        local_attention_mask=b["local_attention_mask"], caption_ids=kw.get("cap", b["caption_ids"]),
        caption_attention_mask=b["caption_attention_mask"], spatial_ids=kw.get("sp", b["spatial_ids"]),
        spatial_attention_mask=b["spatial_attention_mask"],
    )  # fmt: skip
    base = model.itm_pass(**args())
    ts = b["spatial_ids"].shape[1]
    text = lambda o: o.text_output  # noqa: E731

    cap = model.itm_pass(**args(cap=bump(b["caption_ids"], 2)))  # caption <-> visual queries only
    assert changed(cap.visual_query_output, base.visual_query_output)
    torch.testing.assert_close(cap.grounding_query_output, base.grounding_query_output, **TOL)
    torch.testing.assert_close(text(cap)[:, :ts], text(base)[:, :ts], **TOL)

    sp = model.itm_pass(**args(sp=bump(b["spatial_ids"], 3)))  # spatial text <-> grounding queries only
    assert changed(sp.grounding_query_output, base.grounding_query_output)
    torch.testing.assert_close(sp.visual_query_output, base.visual_query_output, **TOL)
    torch.testing.assert_close(text(sp)[:, ts:], text(base)[:, ts:], **TOL)

    local = model.itm_pass(**args(local=other_objects(b)))  # visual queries do not see the grounding ones
    torch.testing.assert_close(local.visual_query_output, base.visual_query_output, **TOL)
    torch.testing.assert_close(text(local)[:, ts:], text(base)[:, ts:], **TOL)
    assert changed(local.grounding_query_output, base.grounding_query_output)

    img = model.itm_pass(**args(image=image.roll(1, dims=0)))  # another image (cross-attention ignores token order)
    torch.testing.assert_close(img.grounding_query_output, base.grounding_query_output, **TOL)
    assert changed(img.visual_query_output, base.visual_query_output)


def test_itm_without_grounding_queries_lets_visual_queries_see_both_texts():
    model, b, image = make(**{"mqformer_config.num_grounding_query_tokens": 0})
    kw = dict(image=image, local_features=None, local_attention_mask=None, caption_attention_mask=b["caption_attention_mask"], spatial_attention_mask=b["spatial_attention_mask"])
    base = model.itm_pass(caption_ids=b["caption_ids"], spatial_ids=b["spatial_ids"], **kw)
    sp = model.itm_pass(caption_ids=b["caption_ids"], spatial_ids=bump(b["spatial_ids"], 3), **kw)
    assert changed(sp.visual_query_output, base.visual_query_output)


def test_icg_is_causal_over_the_caption_and_sees_both_query_sets():
    model, b, image = make()
    query = model.query_pass(image, b["local_features"], b["local_attention_mask"], use_cache=True)
    base = model.icg_pass(query.cache, b["caption_ids"], b["caption_attention_mask"])
    later = model.icg_pass(query.cache, bump(b["caption_ids"], 4), b["caption_attention_mask"])
    torch.testing.assert_close(later.text_output[:, :4], base.text_output[:, :4], **TOL)
    assert changed(later.text_output[:, 4:], base.text_output[:, 4:])
    other = model.query_pass(image, other_objects(b), b["local_attention_mask"], use_cache=True)
    grounded = model.icg_pass(other.cache, b["caption_ids"], b["caption_attention_mask"])
    assert changed(grounded.text_output, base.text_output)  # the grounding queries are visible
    # [DEC] replaces [CLS]
    assert (b["caption_ids"][:, 0] == model.config.mqformer_config.cls_token_id).all()


def test_msp_sees_queries_and_spatial_text_bidirectionally():
    model, b, image = make()
    base = model.msp_pass(image, b["local_features"], b["local_attention_mask"], b["msp_ids"], b["spatial_attention_mask"])
    late = model.msp_pass(image, b["local_features"], b["local_attention_mask"], bump(b["msp_ids"], 5), b["spatial_attention_mask"])
    assert changed(late.text_output[:, :5], base.text_output[:, :5])  # bidirectional
    assert changed(late.query_output, base.query_output)  # queries see the spatial text
    objects = model.msp_pass(image, other_objects(b), b["local_attention_mask"], b["msp_ids"], b["spatial_attention_mask"])
    assert changed(objects.text_output, base.text_output)  # masked objects can be restored from the refiner features


def test_all_four_losses_and_their_sum():
    model, b, _ = make()
    model.train()
    out = model(**b)
    parts = [out.loss_itc, out.loss_itm, out.loss_icg, out.loss_msp]
    assert all(p is not None and torch.isfinite(p) for p in parts)
    torch.testing.assert_close(out.loss, sum(parts))
    out.loss.backward()
    grad = model.mqformer.encoder.layer[0].grounding_crossattention.attention.key.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert model.itm_head.weight.grad.abs().sum() > 0 and model.temp.grad is not None


@pytest.mark.parametrize(
    "overrides, absent",
    [
        ({"use_itc": False}, "loss_itc"),
        ({"use_itm": False}, "loss_itm"),
        ({"use_icg": False}, "loss_icg"),
        ({"use_msp": False}, "loss_msp"),
        ({"use_spatial_text": False}, "loss_msp"),
    ],
)
def test_switches_turn_losses_off(overrides, absent):
    model, b, _ = make(**overrides)
    out = model(**b)
    assert getattr(out, absent) is None
    assert torch.isfinite(out.loss)


def test_without_grounding_queries_all_losses_still_train():
    model, b, _ = make(**{"mqformer_config.num_grounding_query_tokens": 0})
    out = model(**b)
    assert all(torch.isfinite(x) for x in (out.loss_itc, out.loss_itm, out.loss_icg, out.loss_msp))


def test_a_few_steps_reduce_every_loss():
    torch.manual_seed(0)
    model, b, _ = make()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model(**b)
    for _ in range(25):
        optimizer.zero_grad()
        model(**b).loss.backward()
        optimizer.step()
    last = model(**b)
    for name in ("loss_itc", "loss_icg", "loss_msp"):
        assert getattr(last, name) < getattr(first, name), name
    assert last.loss < 0.7 * first.loss


def test_starts_from_blip2_weights(tmp_path):
    ref = tiny.save_transformers_blip2("Blip2ForImageTextRetrieval", tmp_path)
    tok = tiny.mqformer_tokenizer()
    config = tiny.lyrics_config(tok)
    for key, value in tiny.TINY_QFORMER.items():
        if key != "vocab_size":
            setattr(config.mqformer_config, key, value)
    config.mqformer_config.encoder_hidden_size = tiny.IMAGE_WIDTH
    config.mqformer_config.num_query_tokens = 4
    config.mqformer_config.contrastive_dim = 256
    config.mqformer_config.vocab_size = max(config.mqformer_config.vocab_size, tiny.VOCAB)
    model = LyricsForPretraining(config)
    model.image_layernorm = torch.nn.LayerNorm(tiny.IMAGE_WIDTH)
    report = model.load_blip2(tmp_path)
    torch.testing.assert_close(model.vision_proj.weight, ref.vision_projection.weight)
    torch.testing.assert_close(model.grounding_proj.weight, ref.vision_projection.weight)
    torch.testing.assert_close(model.itm_head.weight, ref.itm_head.weight)
    torch.testing.assert_close(model.image_layernorm.weight, ref.vision_model.post_layernorm.weight)
    assert "mqformer.grounding_query_tokens" in report.newly_initialized


@pytest.mark.parametrize("switches", [{}, {"use_itm": False}, {"use_itc": False}, {"use_icg": False}, {"use_icg": False, "use_msp": False}])
def test_every_trainable_parameter_gets_a_gradient(switches):
    """Objectives switched off freeze their heads (`configure_trainable`), so DDP needs no
    `find_unused_parameters`; a batch with nothing masked still visits the MSP path."""
    tok = tiny.mqformer_tokenizer()
    config = tiny.lyrics_config(tok, **switches)
    torch.manual_seed(0)
    model = LyricsForPretraining(config)
    model.configure_trainable()
    examples = [PretrainingExample(caption=c, record=tiny.refiner_record(f"i{i}", objects=2, seed=i), image_embeds=torch.randn(17, 32, generator=torch.Generator().manual_seed(i)), index=i)
                for i, c in enumerate(["a red circle", "two blue squares", "a green star"])]  # fmt: skip
    batch = PretrainingCollator(tok, config, seed=0)(examples)
    if switches.get("use_icg") is False:
        batch["msp_labels"] = torch.full_like(batch["msp_labels"], -100)  # nothing masked in this batch
    model(**batch).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_itc_halves_separate_is_the_mean_of_two_contrastive_losses():
    """`itc_halves="separate"`: caption <-> visual queries and spatial text <-> grounding queries each
    get their own contrastive loss (checked by hand from the four projections' outputs); "mean" puts
    one loss on the mean of the two cosines, and the two differ."""
    import torch.nn.functional as F

    model, b, _ = make(itc_halves="separate", use_itm=False, use_icg=False, use_msp=False)
    feats = {}
    for name in ("vision_proj", "text_proj", "grounding_proj", "spatial_proj"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: feats.setdefault(name, F.normalize(o, dim=-1)))
    out = model(**b)
    targets, temp, smooth = torch.arange(3), model.temp, model.config.label_smoothing
    expected = 0
    for image, text in (("vision_proj", "text_proj"), ("grounding_proj", "spatial_proj")):
        sim = feats[image] @ feats[text].T / temp
        expected = expected + F.cross_entropy(sim, targets, label_smoothing=smooth) + F.cross_entropy(sim.T, targets, label_smoothing=smooth)
    torch.testing.assert_close(out.loss_itc, expected / 4)
    mean_model, _, _ = make(use_itm=False, use_icg=False, use_msp=False)
    mean_model.load_state_dict(model.state_dict())
    assert changed(mean_model(**b).loss_itc, out.loss_itc)
    from lyrics.presets import load_config

    with pytest.raises(ValueError, match="itc_halves"):
        load_config("tiny", {"itc_halves": "sum"})
