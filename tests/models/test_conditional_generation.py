"""Stage 2: soft visual tokens at the image placeholder, loss on responses, LoRA, generation, and the
save -> load -> merge round trip with equal logits."""

import pytest
import torch
from safetensors.torch import load_file
from PIL import Image

import tiny
from lyrics.models.conditional_generation import LyricsForConditionalGeneration
from lyrics.models.processing import LyricsProcessor, ProcessorConfig, load_image_processor

CONV = [{"from": "human", "value": "<image>\nwhat color is the circle?"}, {"from": "gpt", "value": "red"}]
TEXT_ONLY = [{"from": "human", "value": "what is a circle?"}, {"from": "gpt", "value": "a shape"}]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage2")
    tokenizer = tiny.llm_tokenizer()
    tiny.save_llm(root / "llm", tokenizer)
    tiny.save_vision(root / "vision")
    return root


def build(parts, **overrides):
    config = tiny.lyrics_config(**overrides)
    proc = LyricsProcessor(
        tiny.llm_tokenizer(), ProcessorConfig(num_image_tokens=config.num_image_tokens), load_image_processor(parts / "vision")
    )
    model = LyricsForConditionalGeneration.from_components(config, parts / "llm", parts / "vision", processor=proc)
    model.enable_lora()
    return model, proc


def inputs(proc, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = [Image.new("RGB", (40, 40), c) for c in ("red", "blue", "green")[:n]]
    return dict(pixel_values=proc.pixel_values(images), local_features=torch.randn(n, 3, tiny.LOCAL_FEATURES, generator=g))


def test_trainable_parts_follow_the_paper(parts):
    model, _ = build(parts)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable)
    assert any(n.startswith("mqformer.") for n in trainable) and "language_projection.weight" in trainable
    assert not any(n.startswith("image_encoder.") for n in trainable)
    assert not any("lora" not in n and n.startswith("language_model.") for n in trainable)
    lora_targets = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n in trainable if "lora_A" in n}
    assert lora_targets == {"q_proj", "v_proj"}
    frozen, _ = build(parts, train_mqformer=False)  # released code: only LoRA trains
    assert all("lora_" in n for n, p in frozen.named_parameters() if p.requires_grad)


def test_visual_tokens_reach_the_llm_and_loss_covers_responses_only(parts):
    model, proc = build(parts)
    model.eval()
    batch = proc.training_batch([CONV, CONV])
    visual = inputs(proc)
    out = model(**batch, **visual)
    assert out.logits.shape[:2] == batch["input_ids"].shape  # the usual (B, T, V)
    # the loss is the mean cross-entropy over response positions only
    logits = out.logits[:, :-1]
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    manual = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, manual)
    # training asks for the response rows only: the same loss and the same rows
    sliced = model(**batch, **visual, response_logits_only=True)
    assert sliced.logits.shape == (int(keep.sum()), logits.shape[-1])
    torch.testing.assert_close(sliced.logits, logits[keep], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sliced.loss, manual)
    # another image changes the prediction; the visual tokens sit at the image positions
    other = model(**batch, pixel_values=visual["pixel_values"].flip(0), local_features=visual["local_features"])
    assert (other.logits[0] - out.logits[0]).abs().max() > 1e-4
    first_image = int((batch["input_ids"][0] == model.config.image_token_index).nonzero()[0])
    torch.testing.assert_close(other.logits[0, :first_image], out.logits[0, :first_image])


def test_response_logits_give_the_full_logits_loss_for_both_reductions(parts, monkeypatch):
    model, proc = build(parts)
    model.eval()
    long_answer = CONV[:1] + [{"from": "gpt", "value": "a red circle on a blue square"}]
    batch = proc.training_batch([CONV, long_answer])
    visual = inputs(proc)
    assert model._slices_logits()  # the tiny LLaMA slices inside transformers
    token, sample = (model(**batch, **visual, loss_reduction=r, response_logits_only=True) for r in ("token", "sample"))
    assert abs(token.loss.item() - sample.loss.item()) > 1e-4  # the two means differ on unequal answers
    for reduction, sliced in (("token", token), ("sample", sample)):
        full = model(**batch, **visual, loss_reduction=reduction)
        torch.testing.assert_close(sliced.loss, full.loss)
    # an LLM whose forward cannot slice its logits gets the same rows and loss
    monkeypatch.setattr(LyricsForConditionalGeneration, "_slices_logits", lambda self: False)
    fallback = model(**batch, **visual, loss_reduction="sample", response_logits_only=True)
    torch.testing.assert_close(fallback.logits, sample.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fallback.loss, sample.loss)


def test_local_features_matter(parts):
    model, proc = build(parts)
    model.eval()
    batch = proc.training_batch([CONV])
    visual = inputs(proc, n=1)
    base = model(**batch, **visual).logits
    moved = model(**batch, pixel_values=visual["pixel_values"], local_features=torch.randn(1, 3, tiny.LOCAL_FEATURES)).logits
    assert (moved - base).abs().max() > 1e-5


def test_text_only_samples_mix_with_image_samples(parts):
    model, proc = build(parts)
    batch = proc.training_batch([CONV, TEXT_ONLY])
    out = model(**batch, **inputs(proc, n=1))  # one image, for the one sample that has <image>
    assert torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="image-token positions"):
        model(**batch, **inputs(proc, n=2))


def test_several_images_in_one_prompt(parts):
    model, proc = build(parts)
    model.eval()
    shots = [{"from": "human", "value": "<image>\nwhat color?"}, {"from": "gpt", "value": "red"},
             {"from": "human", "value": "<image>\nwhat color?"}]  # fmt: skip
    prompt = proc.generation_batch([shots])
    visual = inputs(proc, n=2)
    assert model.generate(**prompt, **visual, max_new_tokens=3, do_sample=False).shape == (1, 3)
    # the images fill the placeholders in order: swapping them changes what follows the first one
    logits = model(**prompt, **visual).logits
    swapped = model(**prompt, pixel_values=visual["pixel_values"].flip(0), local_features=visual["local_features"].flip(0)).logits
    first = int((prompt["input_ids"][0] == model.config.image_token_index).nonzero()[0])
    torch.testing.assert_close(swapped[0, :first], logits[0, :first])
    assert (swapped[0, -1] - logits[0, -1]).abs().max() > 1e-4


def test_generation_greedy_sampling_beam(parts):
    model, proc = build(parts)
    model.eval()
    prompt = proc.generation_batch([CONV[:1]])
    visual = inputs(proc, n=1)
    greedy = model.generate(**prompt, **visual, max_new_tokens=6, do_sample=False)
    assert greedy.shape == (1, 6)
    no_cache = model.generate(**prompt, **visual, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(greedy, no_cache)  # the KV cache changes nothing but speed
    torch.manual_seed(0)
    sampled = model.generate(**prompt, **visual, max_new_tokens=6, do_sample=True, top_p=0.9, temperature=1.0)
    beam = model.generate(**prompt, **visual, max_new_tokens=6, num_beams=3, do_sample=False)
    assert sampled.shape[0] == beam.shape[0] == 1
    batched = model.generate(**proc.generation_batch([CONV[:1], CONV[:1]]), **inputs(proc, n=2), max_new_tokens=6, do_sample=False)
    assert torch.equal(batched[0], greedy[0])  # left padding keeps batched answers equal


def test_save_load_merge_round_trip(parts, tmp_path):
    model, proc = build(parts)
    with torch.no_grad():  # make LoRA matter (B starts at zero)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.eval()
    batch = proc.training_batch([CONV, CONV])
    visual = inputs(proc)
    reference = model(**batch, **visual).logits

    model.save_pretrained(tmp_path / "ckpt", processor=proc)
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"config.json", "lyrics_model.safetensors", "adapter", "tokenizer", "processor_config.json"} <= files
    # `<image>` grew the vocabulary; its row is rebuilt at load, so the adapter holds LoRA weights only
    embeddings = model.llm.get_input_embeddings().weight
    torch.testing.assert_close(embeddings[proc.image_token_id], embeddings[: proc.image_token_id].mean(0))
    adapter = load_file(str(tmp_path / "ckpt" / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in key for key in adapter), sorted(adapter)[:5]
    loaded = LyricsForConditionalGeneration.from_pretrained(tmp_path / "ckpt")
    torch.testing.assert_close(loaded(**batch, **visual).logits, reference, rtol=1e-5, atol=1e-5)

    loaded.save_merged(tmp_path / "merged", processor=LyricsProcessor.from_pretrained(tmp_path / "ckpt"))
    assert hasattr(loaded.language_model, "peft_config")  # the caller's model keeps its adapter
    torch.testing.assert_close(loaded(**batch, **visual).logits, reference, rtol=1e-5, atol=1e-5)
    merged = LyricsForConditionalGeneration.from_pretrained(tmp_path / "merged", dtype=torch.float32, device_map="cpu")
    assert not hasattr(merged.language_model, "peft_config")
    torch.testing.assert_close(merged(**batch, **visual).logits, reference, rtol=1e-5, atol=1e-5)


def test_transformers_options_are_honoured_or_refused_by_name(parts, tmp_path):
    model, proc = build(parts)
    with pytest.raises(TypeError, match=r"save_pretrained does not support \['max_shard_size', 'push_to_hub'\]"):
        model.save_pretrained(tmp_path / "ckpt", push_to_hub=True, max_shard_size="1GB")
    with pytest.raises(ValueError, match="safetensors only"):
        model.save_pretrained(tmp_path / "ckpt", safe_serialization=False)
    model.save_pretrained(tmp_path / "skipped", is_main_process=False)
    assert not (tmp_path / "skipped").exists()
    model.save_pretrained(tmp_path / "ckpt", processor=proc)
    with pytest.raises(TypeError, match=r"from_pretrained does not support \['revision'\]"):
        LyricsForConditionalGeneration.from_pretrained(tmp_path / "ckpt", revision="main")
    with pytest.raises(ValueError, match="device_map must name one device"):
        LyricsForConditionalGeneration.from_pretrained(tmp_path / "ckpt", device_map="auto")
    loaded = LyricsForConditionalGeneration.from_pretrained(tmp_path / "ckpt", dtype=torch.bfloat16)
    assert loaded.llm.dtype == torch.bfloat16


def test_pad_id_zero_is_used_for_generation(parts, monkeypatch):
    model, proc = build(parts)
    model.llm.config.pad_token_id = 0
    seen = {}
    monkeypatch.setattr(model.language_model, "generate", lambda **kw: seen.update(kw) or torch.zeros(1, 1, dtype=torch.long))
    model.generate(**proc.generation_batch([CONV[:1]]), **inputs(proc, n=1), max_new_tokens=1)
    assert seen["pad_token_id"] == 0


def test_stage1_weights_load_into_stage2(parts, tmp_path):
    from lyrics.models.pretraining import LyricsForPretraining

    model, proc = build(parts)
    stage1 = LyricsForPretraining(model.config)
    stage1.save_pretrained(tmp_path / "stage1")
    keys = model.load_stage1(tmp_path / "stage1")
    assert "mqformer.grounding_query_tokens" in keys
    torch.testing.assert_close(model.mqformer.query_tokens, stage1.mqformer.query_tokens)
    with pytest.raises(FileNotFoundError):
        model.load_stage1(tmp_path / "nothing")


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a Lyrics checkpoint"):
        LyricsForConditionalGeneration.from_pretrained(tmp_path)


def test_forward_and_generate_take_one_visual_inputs_object(parts):
    from lyrics.models.conditional_generation import VisualInputs

    model, proc = build(parts)
    model.eval()
    batch = proc.training_batch([CONV])
    visual = inputs(proc, n=1)
    by_name = model(**batch, **visual).logits
    as_object = model(**batch, visual=VisualInputs(**visual)).logits
    torch.testing.assert_close(as_object, by_name, rtol=0, atol=0)
    prompt = proc.generation_batch([CONV[:1]])
    assert torch.equal(model.generate(**prompt, visual=VisualInputs(**visual), max_new_tokens=3, do_sample=False),
                       model.generate(**prompt, **visual, max_new_tokens=3, do_sample=False))  # fmt: skip
    with pytest.raises(ValueError, match="not both"):
        model(**batch, visual=VisualInputs(**visual), local_features=visual["local_features"])


def _split_image_embeds(model, batch, visual):
    """Input embeddings at the image placeholders, `(B_img, Nv + Ng, H)`, and elsewhere."""
    embeds = model.embed(batch["input_ids"], visual)
    positions = batch["input_ids"] == model.config.image_token_index
    return embeds[positions].view(-1, model.config.num_image_tokens, embeds.shape[-1]), embeds[~positions]


@pytest.mark.parametrize("instruction_aware", [False, True])
def test_zero_grounding_puts_the_projection_bias_at_grounding_positions(parts, instruction_aware):
    """`query_ablation="zero_grounding"`: the grounding positions get `language_projection(0)` (its
    bias), the visual positions and the text keep their embeddings; also on the instruction-aware path."""
    from lyrics.models.conditional_generation import VisualInputs

    model, proc = build(parts, instruction_aware=instruction_aware)
    model.eval()
    batch = proc.generation_batch([CONV[:1], CONV[:1]])
    visual = VisualInputs(**inputs(proc, n=2))
    if instruction_aware:  # the instruction in the MQ-Former vocabulary (any in-vocabulary ids)
        visual.qformer_input_ids = torch.randint(5, 20, (2, 6), generator=torch.Generator().manual_seed(3))
    nv = model.config.mqformer_config.num_query_tokens
    ng = model.config.mqformer_config.num_grounding_query_tokens
    assert nv and ng and model.config.num_image_tokens == nv + ng
    with torch.no_grad():
        full_image, full_text = _split_image_embeds(model, batch, visual)
        model.query_ablation = "zero_grounding"
        zeroed_image, zeroed_text = _split_image_embeds(model, batch, visual)
        tokens = model.visual_tokens(visual)
    bias = model.language_projection.bias.detach()
    torch.testing.assert_close(zeroed_image[:, nv:], bias.expand(2, ng, -1), rtol=0, atol=0)
    torch.testing.assert_close(tokens[:, nv:], bias.expand(2, ng, -1), rtol=0, atol=0)
    torch.testing.assert_close(zeroed_image[:, :nv], full_image[:, :nv], rtol=0, atol=0)
    torch.testing.assert_close(zeroed_text, full_text, rtol=0, atol=0)
    assert (full_image[:, nv:] - bias).abs().max() > 1e-3  # the full model's grounding tokens are not the bias


def test_zero_grounding_changes_what_the_llm_predicts_and_switches_back(parts):
    model, proc = build(parts)
    model.eval()
    prompt = proc.generation_batch([CONV[:1]])
    visual = inputs(proc, n=1)
    with torch.no_grad():
        full = model(**prompt, **visual).logits
        model.query_ablation = "zero_grounding"
        zeroed = model(**prompt, **visual).logits
        ablated_generation = model.generate(**prompt, **visual, max_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True)
        model.query_ablation = None
        restored = model(**prompt, **visual).logits
        full_generation = model.generate(**prompt, **visual, max_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True)
    assert (zeroed[0, -1] - full[0, -1]).abs().max() > 1e-4
    torch.testing.assert_close(restored, full, rtol=0, atol=0)
    # generation goes through the same switch: its first-step scores are those of the ablated forward
    torch.testing.assert_close(ablated_generation.scores[0][0], zeroed[0, -1], rtol=1e-5, atol=1e-5)
    assert (ablated_generation.scores[0][0] - full_generation.scores[0][0]).abs().max() > 1e-4


def test_zero_grounding_is_off_by_default_unsaved_and_needs_grounding_queries(parts, tmp_path):
    import json

    model, proc = build(parts)
    assert model.query_ablation is None
    before = model.config.to_dict()
    model.query_ablation = "zero_grounding"
    assert model.config.to_dict() == before  # a runtime switch, not configuration
    model.save_pretrained(tmp_path / "ckpt", processor=proc)
    assert "zero_grounding" not in (tmp_path / "ckpt" / "config.json").read_text()
    assert "query_ablation" not in json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert LyricsForConditionalGeneration.from_pretrained(tmp_path / "ckpt").query_ablation is None
    with pytest.raises(ValueError, match="query_ablation must be one of"):
        model.query_ablation = "zero_visual"
    plain, _ = build(parts, **{"mqformer_config.num_grounding_query_tokens": 0})
    with pytest.raises(ValueError, match="needs grounding queries"):
        plain.query_ablation = "zero_grounding"
    assert plain.query_ablation is None
