import json

import pytest
import torch

from lyrics.audit import (
    PAPER_FIGURES,
    PAPER_SCHEDULE,
    TOLERANCE,
    Workload,
    audit,
    audit_json,
    cost_json,
    stage1_flops,
    stage1_inputs,
    stage2_flops,
    stage2_inputs,
    training_cost,
    with_image_token,
)
from lyrics.presets import load_config


def test_paper_preset_reproduces_the_paper_parameter_counts():
    rows = audit(load_config("paper"), PAPER_FIGURES)
    report = audit_json(rows)
    for key in ("mqformer", "projection", "lora", "trainable"):
        assert abs(report[key] - PAPER_FIGURES[key]) / PAPER_FIGURES[key] <= TOLERANCE, key
    assert report["within_tolerance"] is True
    assert abs(report["total"] - PAPER_FIGURES["total"]) / PAPER_FIGURES["total"] < 0.05
    assert report["projection"] == 768 * 5120 + 5120
    tagger = next(r for r in rows if r.component == "refiner.tagger")
    assert "cannot be built" in tagger.note


def test_released_preset_trains_only_lora():
    report = audit_json(audit(load_config("released")))
    assert report["lora"] == 40 * 3 * 8 * (5120 + 5120)
    assert report["trainable"] == report["lora"]
    assert report["mqformer"] > report["trainable"]


# --- training cost (lyrics audit --flops) -----------------------------------------------------------


def _real_flops(step) -> int:
    """FLOPs of `step()` on real CPU tensors, counted the way the cost model counts."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        step()
    return counter.get_total_flops()


def test_meta_count_is_the_count_of_a_real_cpu_step_of_the_tiny_preset():
    """The meta-device cost model counts what a real step does: stage 1 through the recipe's path
    (frozen encoder under no_grad, then `LyricsForPretraining`), stage 2 through the real
    `LyricsForConditionalGeneration.forward` (image placeholders, response-only logits, LoRA)."""
    from lyrics.models.conditional_generation import LyricsForConditionalGeneration
    from lyrics.models.image_encoder import ImageEncoder
    from lyrics.models.pretraining import LyricsForPretraining

    config = with_image_token(load_config("tiny"))
    workload = Workload().fitted(config)
    torch.manual_seed(0)

    encoder = ImageEncoder(config.vision_config, config.vision_feature_layer).requires_grad_(False)
    model = LyricsForPretraining(config).train()
    inputs = stage1_inputs(config, workload, batch=2)

    def stage1_step():
        with torch.no_grad():
            embeds = encoder(inputs["pixel_values"])
        model(image_embeds=embeds, **{k: v for k, v in inputs.items() if k != "pixel_values"}).loss.backward()

    assert sum(stage1_flops(config, workload, batch=2)) == _real_flops(stage1_step)

    model = LyricsForConditionalGeneration(config)
    model.enable_lora()
    model.train()
    batch = stage2_inputs(config, workload, batch=2)
    assert sum(stage2_flops(config, workload, batch=2)) == _real_flops(lambda: model(**batch, response_logits_only=True).loss.backward())


def test_tiny_costs_are_consistent_and_the_json_has_the_documented_keys():
    config = load_config("tiny")
    workload = Workload().fitted(config)
    costs = training_cost(config, workload)
    assert [c.stage for c in costs] == ["stage1", "stage2"]
    report = json.loads(json.dumps(cost_json(costs, workload, mfu=0.5, peak_tflops=100.0, gpus=4)))
    assert {"convention", "workload", "mfu", "peak_tflops", "gpus", "paper_gpus", "stages", "total_flops", "gpu_hours", "wall_hours"} <= set(report)
    assert report["workload"] == {"objects": 8, "caption_tokens": 32, "spatial_tokens": 96, "llm_tokens": 256, "response_tokens": 128}
    for stage, (steps, batch) in PAPER_SCHEDULE.items():
        s = report["stages"][stage]
        assert (s["steps"], s["batch_size"]) == (steps, batch)
        assert s["flops_per_sample"] == s["frozen_forward_flops_per_sample"] + s["forward_flops_per_sample"] + s["backward_flops_per_sample"]
        assert s["flops_per_step"] == s["flops_per_sample"] * batch
        assert s["total_flops"] == s["flops_per_step"] * steps
        assert s["gpu_hours"] == pytest.approx(s["total_flops"] / (0.5 * 100e12) / 3600)
        assert s["wall_hours"] == pytest.approx(s["gpu_hours"] / 4)
        # trainable parts: backward costs about twice their forward; the frozen encoder has none
        assert s["frozen_forward_flops_per_sample"] > 0 and s["backward_flops_per_sample"] > s["forward_flops_per_sample"]
    assert report["total_flops"] == sum(s["total_flops"] for s in report["stages"].values())
    assert report["gpu_hours"] == pytest.approx(sum(s["gpu_hours"] for s in report["stages"].values()))


def test_paper_stage2_is_the_llm_at_two_flops_per_parameter_and_token():
    """Stage 2 of the paper: the forward is about 2 x 12.7B (Vicuna-13B without embeddings) x 512
    tokens + attention + the output layer over the response; the backward through the frozen LLM for
    LoRA is about one more forward, not two; stage 2 costs far more per sample than stage 1."""
    config = load_config("paper")
    workload = Workload()
    stage1, stage2 = training_cost(config, workload)
    text = config.text_config
    h, layers, tokens = text.hidden_size, text.num_hidden_layers, workload.llm_tokens
    per_layer = 4 * h * h + 3 * h * text.intermediate_size
    llm_forward = 2 * per_layer * layers * tokens + 4 * layers * tokens**2 * h + 2 * workload.response_tokens * h * text.vocab_size
    assert stage2.forward == pytest.approx(llm_forward, rel=0.01)
    assert 0.95 < stage2.backward / stage2.forward < 1.15
    # CLIP ViT-L/14 at 224 px, forward only: about 2 x 303M x 257 tokens
    assert stage1.frozen_forward == stage2.frozen_forward == pytest.approx(2 * 303e6 * 257, rel=0.05)
    assert 1.9 < stage1.backward / stage1.forward < 2.1
    assert stage2.per_sample > 20 * stage1.per_sample


def test_cli_flops_json_parses_and_text_names_the_schedule():
    from typer.testing import CliRunner

    from lyrics.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["audit", "--preset", "tiny", "--flops", "--json", "--mfu", "0.5", "--gpus", "8"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["preset"] == "tiny" and report["mfu"] == 0.5 and report["gpus"] == 8 and report["paper_gpus"] == 16
    assert set(report["stages"]) == {"stage1", "stage2"}
    text = runner.invoke(app, ["audit", "--preset", "tiny", "--flops"]).output
    assert "stage1" in text and "stage2" in text and "16 x A100" in text and "GPU-hours at MFU 0.40 of 312" in text
    bad = runner.invoke(app, ["audit", "--preset", "tiny", "--flops", "--mfu", "1.5"])
    assert bad.exit_code == 2
