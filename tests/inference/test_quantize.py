"""`--quantize`: int8 weight-only through torchao on the tiny checkpoint (weights replaced, bytes down,
logits close, LoRA merged first), refusals that name the backend and the flag, and the CLI pass-through."""

from __future__ import annotations

import json
import typing

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from inference.tinyckpt import scene
from lyrics.cli import app
from lyrics.inference import LyricsPipeline
from lyrics.inference.pipeline import ChatRequest
from lyrics.inference.quantize import METHODS, QuantizationError, check_quantization, quantize_model, tensor_bytes, weight_bytes
from lyrics.models.conditional_generation import LyricsForConditionalGeneration

torchao = pytest.importorskip("torchao", reason="the `quant` extra (torchao) is not installed")


def quantised_linears(model) -> list[tuple[str, nn.Linear]]:
    output = model.llm.get_output_embeddings()
    return [(n, m) for n, m in model.llm.named_modules() if isinstance(m, nn.Linear) and m is not output]


@pytest.fixture(scope="module")
def pipes(checkpoint):
    """The tiny checkpoint three ways: LoRA merged (fp32), merged then int8, and LoRA not merged."""
    return LyricsPipeline.from_pretrained(checkpoint), LyricsPipeline.from_pretrained(checkpoint, quantize="int8"), LyricsPipeline.from_pretrained(checkpoint, merge_lora=False)


@pytest.fixture(scope="module")
def logits(pipes):
    """Logits of each model on one padded batch of three image prompts (the same inputs for all),
    with the adapter switched off for the third (the base LLM alone), at the prompts' real tokens."""
    plain, int8, unmerged = pipes
    batch = plain.generator.model_inputs([p.row for p in plain.prepare([ChatRequest(scene(i), "What is in the picture?") for i in range(3)])])
    keep = batch["attention_mask"].bool()
    with torch.inference_mode():
        out = [plain.model(**batch).logits[keep], int8.model(**batch).logits[keep]]
        with unmerged.model.language_model.disable_adapter():
            out.append(unmerged.model(**batch).logits[keep])
    return out


def test_int8_replaces_the_llm_linear_weights_and_bytes_drop(checkpoint, pipes):
    plain, int8, _ = pipes
    before = dict(quantised_linears(plain.model))
    after = quantised_linears(int8.model)
    assert len(after) == len(before) == 14  # 2 layers x (q, k, v, o, gate, up, down)
    for name, layer in after:
        weight = layer.weight
        assert type(weight).__name__ == "Int8Tensor" and weight.qdata.dtype == torch.int8, name
        assert weight.shape == before[name].weight.shape
        # int8 data plus one fp32 scale per output row: under a third of the fp32 weight
        assert tensor_bytes(weight) < tensor_bytes(before[name].weight) / 3
    # the output layer (tied to the embedding in small LLMs) and the MQ-Former stay as they are
    assert type(int8.model.llm.get_output_embeddings().weight) is nn.Parameter
    assert all(type(p) is nn.Parameter for p in int8.model.mqformer.parameters())
    assert weight_bytes(int8.model) < weight_bytes(plain.model)
    assert getattr(int8.model, "lyrics_quantization") == "int8/torchao"


def test_int8_rounds_each_weight_by_at_most_half_a_step_of_its_row(pipes):
    """Per output row symmetric int8: the step is the row's largest magnitude / 127.5 (torchao's
    symmetric range), and every dequantised weight lies within half a step of the fp32 one."""
    plain, int8, _ = pipes
    before = dict(quantised_linears(plain.model))
    for name, layer in quantised_linears(int8.model):
        w, q = before[name].weight.detach(), layer.weight
        step = q.scale.reshape(-1, 1)
        torch.testing.assert_close(step, w.abs().amax(dim=1, keepdim=True) / 127.5, rtol=1e-5, atol=1e-9)
        assert ((q.qdata.float() * step - w).abs() <= step / 2 + 1e-7).all(), name


def test_int8_logits_stay_close_and_lora_is_merged_first(logits):
    """Each weight moves by at most 1/255 of its row's largest magnitude (test above), so each
    layer's output moves by well under 1% of its scale; through the tiny LLM's two layers the worst
    logit moved 1.4% of the largest logit here. 5% leaves room for other machines' float rounding
    and is still far below the adapter's own effect (90% of the largest logit): a model quantised
    without its LoRA, or with the adapter dropped, fails."""
    plain, int8, base = logits
    scale = plain.abs().max()
    assert (int8 - plain).abs().max() <= 0.05 * scale
    assert (base - plain).abs().max() >= 0.5 * scale  # the adapter matters in this checkpoint
    assert (int8 - plain).abs().max() < 0.1 * (base - plain).abs().max()
    assert (int8.argmax(-1) == plain.argmax(-1)).float().mean() >= 0.95


def test_quantised_pipeline_still_generates(pipes):
    plain, int8, _ = pipes
    assert not hasattr(int8.model.language_model, "merge_and_unload")  # no PEFT wrapper left
    for i in range(2):
        a = plain(scene(i), "What is in the picture?", max_new_tokens=8)
        b = int8(scene(i), "What is in the picture?", max_new_tokens=8)
        assert b.text and b.completion_tokens == a.completion_tokens and b.finish_reason == a.finish_reason


def test_from_pretrained_quantize_merges_lora_then_quantises(checkpoint):
    model = LyricsForConditionalGeneration.from_pretrained(checkpoint, quantize="int8")
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert all(type(m.weight).__name__ == "Int8Tensor" for _, m in quantised_linears(model))
    with pytest.raises(ValueError, match="already quantised"):
        quantize_model(model, "int8")
    with pytest.raises(ValueError, match="is_trainable"):
        LyricsForConditionalGeneration.from_pretrained(checkpoint, quantize="int8", is_trainable=True)


def test_refusals_name_the_backend_and_the_flag_that_works(checkpoint):
    with pytest.raises(QuantizationError, match=r"bitsandbytes.*CUDA only.*--device cuda:0.*--quantize int8"):
        check_quantization("nf4", "cpu")
    with pytest.raises(QuantizationError, match=r"bitsandbytes.*--quantize int8 \(torchao"):
        check_quantization("int8", "cpu", backend="bitsandbytes")
    with pytest.raises(QuantizationError, match="torchao"):
        check_quantization("nf4", "cpu", backend="torchao")
    with pytest.raises(ValueError, match="quantize must be one of none, int8, nf4, got 'int4'"):
        check_quantization("int4")
    with pytest.raises(QuantizationError, match="bitsandbytes"):  # refused before the model loads
        LyricsPipeline.from_pretrained(checkpoint, quantize="nf4")
    with pytest.raises(ValueError, match="merge_lora=False"):
        LyricsPipeline.from_pretrained(checkpoint, quantize="int8", merge_lora=False)
    assert check_quantization("none") is None and check_quantization("int8") == "torchao"


def test_weight_bytes_counts_a_tied_weight_once():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    model[1].weight = model[0].weight
    assert weight_bytes(model) == 10 * 4 * 4


def test_cli_choices_are_the_methods():
    from lyrics.cli import QuantizeOption

    assert typing.get_args(typing.get_args(QuantizeOption)[0]) == METHODS


def test_cli_passes_quantize_through(monkeypatch, tmp_path):
    import lyrics.eval.command
    import lyrics.inference.chat
    import lyrics.inference.server

    seen: dict[str, str] = {}
    monkeypatch.setattr(lyrics.inference.chat, "run_chat", lambda *a, **k: seen.__setitem__("chat", k["quantize"]))
    monkeypatch.setattr(lyrics.inference.server, "serve", lambda *a, **k: seen.__setitem__("serve", k["quantize"]))
    monkeypatch.setattr(lyrics.eval.command, "run_benchmark", lambda *a, **k: seen.__setitem__("eval", k["quantize"]))
    runner = CliRunner()
    assert runner.invoke(app, ["chat", "--model", str(tmp_path), "--prompt", "hi", "--quantize", "int8"]).exit_code == 0
    assert runner.invoke(app, ["serve", "--model", str(tmp_path), "--quantize", "nf4"]).exit_code == 0
    args = ["eval", "--model", str(tmp_path), "--benchmark", "pope", "--data", str(tmp_path)]
    assert runner.invoke(app, [*args, "--quantize", "int8"]).exit_code == 0
    assert seen == {"chat": "int8", "serve": "nf4", "eval": "int8"}
    assert runner.invoke(app, [*args]).exit_code == 0 and seen["eval"] == "none"
    bad = runner.invoke(app, ["chat", "--model", str(tmp_path), "--quantize", "int4"])
    assert bad.exit_code == 2 and "int4" in bad.output


def test_lyrics_chat_nf4_on_cpu_is_refused_with_the_flag_that_works(checkpoint):
    result = CliRunner().invoke(app, ["chat", "--model", str(checkpoint), "--prompt", "hi", "--quantize", "nf4"])
    assert result.exit_code == 2
    assert "bitsandbytes" in result.output and "--quantize int8" in result.output and "--device cuda:0" in result.output


def write_pope(root, images: int = 2):
    """A POPE random split over toy scenes, two questions per image."""
    (root / "val2014").mkdir(parents=True)
    rows = []
    for i in range(images):
        name = f"COCO_val2014_{i + 1:012d}.jpg"
        scene(i).save(root / "val2014" / name, quality=95)
        for k, (what, label) in enumerate((("red circle", "yes"), ("blue star", "no"))):
            rows.append({"question_id": 10 * i + k, "image": name, "text": f"Is there a {what} in the image?", "label": label})
    (root / "coco_pope_random.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_lyrics_eval_records_the_quantised_model_under_its_own_name(checkpoint, tmp_path):
    """`lyrics eval --quantize int8` is recorded as `<ckpt> (int8)`: the unquantised model's run in
    the same --out is refused, never merged with it."""
    pope = write_pope(tmp_path / "pope")
    args = ["eval", "--model", str(checkpoint), "--benchmark", "pope", "--data", str(pope), "--split", "random",
            "--max-new-tokens", "3", "--out", str(tmp_path / "out")]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--quantize", "int8"])
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "out" / "pope-random-0shot" / "results.json").read_text())
    assert recorded["model"] == f"{checkpoint.resolve()} (int8)" and recorded["errors"] == 0
    mixed = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert mixed.exit_code != 0 and "another configuration" in mixed.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bitsandbytes quantises on CUDA only")
@pytest.mark.parametrize("method", ["nf4", "int8"])
def test_bitsandbytes_on_cuda(checkpoint, method):
    bnb = pytest.importorskip("bitsandbytes")
    plain = LyricsForConditionalGeneration.from_pretrained(checkpoint, device_map="cuda")
    if hasattr(plain.language_model, "merge_and_unload"):
        plain.language_model = plain.language_model.merge_and_unload()
    model = LyricsForConditionalGeneration.from_pretrained(checkpoint)
    report = quantize_model(model, method, backend="bitsandbytes", device="cuda")
    model.to("cuda")
    kind = bnb.nn.Linear4bit if method == "nf4" else bnb.nn.Linear8bitLt
    assert report.layers == 14 and all(isinstance(m, kind) for _, m in quantised_linears(model))
    assert report.bytes_after < report.bytes_before
    ids = torch.tensor([[5, 6, 7, 8, 9]], device="cuda")
    with torch.inference_mode():
        a, b = plain.language_model(input_ids=ids).logits, model.language_model(input_ids=ids).logits
    assert (a - b).abs().max() <= 0.25 * a.abs().max()  # 4-bit steps are 16x coarser than int8's


def test_int8_group_size_gives_each_group_its_own_step_and_bad_sizes_are_refused_first(checkpoint):
    """`group_size=g` (torchao PerGroup): one scale per g input columns of each row, and every
    dequantised weight within half its group's step. A size that does not divide every layer's input
    is refused before anything changes (the LoRA adapter is still unmerged)."""
    model = LyricsForConditionalGeneration.from_pretrained(checkpoint)
    sizes = {m.in_features for n, m in quantised_linears(model) if "lora_" not in n}
    with pytest.raises(QuantizationError, match=r"group_size=7 must divide"):
        quantize_model(model, "int8", group_size=7)
    assert any("lora_" in n for n, _ in model.named_parameters()) and getattr(model, "lyrics_quantization", None) is None
    group = min(sizes) // 2
    merged = LyricsForConditionalGeneration.from_pretrained(checkpoint)
    merged.language_model = merged.language_model.merge_and_unload()
    before = {n: m.weight.detach().clone() for n, m in quantised_linears(merged)}
    quantize_model(model, "int8", group_size=group)
    for name, layer in quantised_linears(model):
        w, q = before[name], layer.weight
        step = q.scale.reshape(w.shape[0], w.shape[1] // group)
        groups = w.reshape(w.shape[0], -1, group)
        torch.testing.assert_close(step, groups.abs().amax(dim=-1) / 127.5, rtol=1e-5, atol=1e-9)
        restored = q.qdata.float().reshape_as(groups) * step.unsqueeze(-1)
        assert ((restored - groups).abs() <= step.unsqueeze(-1) / 2 + 1e-7).all(), name
    with pytest.raises(QuantizationError, match="torchao int8 option"):
        quantize_model(LyricsForConditionalGeneration.from_pretrained(checkpoint), "nf4", backend="bitsandbytes", device="cuda", group_size=group)
