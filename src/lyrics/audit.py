"""Parameter and training-cost audit (paper section 4, "Implementation Detail").

Parameters: builds every part of a paper-scale Lyrics on PyTorch's meta device (shapes only: no memory, a few
seconds) through the same classes a real run uses, counts parameters, and compares with the paper:
MQ-Former 195M, projection 4M, LoRA 79M, 278M trainable, 14.9B in all.

RAM++ cannot be built here (not on PyPI, and it breaks on recent transformers - docs/design.md, "Refiner components in transformers");
its row counts its Swin backbone, built as transformers' `SwinModel`, and says so.

Training cost (`training_cost`, `lyrics audit --flops`): FLOPs per sample and per optimizer step of
each stage, counted with `torch.utils.flop_counter` over a forward and backward of the real modules
built on the meta device at full size, and the GPU-hours of the paper's schedule (600k steps x 512,
then 200k steps x 64, on 16 A100s) at a given MFU and GPU peak. The counting convention is written
out above `PAPER_SCHEDULE`; `bench/gpu.py` divides these counts by measured step times for MFU.

Length: two audits of one meta-device model, parameters and training FLOPs, which share its
construction and the paper's figures.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from lyrics.configuration import LyricsConfig

# Paper section 4: "a total of 14.9 billion parameters, of which 278 million are trainable
# parameters, including the MQ-Former (195M), the projection layer (4M) and LLM with LoRA (79M)".
PAPER_FIGURES = {"mqformer": 195e6, "projection": 4e6, "lora": 79e6, "trainable": 278e6, "total": 14.9e9}
TOLERANCE = 0.03


@dataclass
class AuditRow:
    component: str
    parameters: int
    trainable: int
    paper: float | None = None
    note: str = ""

    @property
    def relative_difference(self) -> float | None:
        if self.paper is None:
            return None
        value = self.trainable if self.component in ("mqformer", "projection", "lora", "trainable") else self.parameters
        return (value - self.paper) / self.paper


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _grounding_dino() -> nn.Module:
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection

    # Defaults are Grounding-DINO-T: Swin-T backbone, BERT-base text encoder, 900 queries.
    return GroundingDinoForObjectDetection(GroundingDinoConfig())


def _sam_hq_vit_h() -> nn.Module:
    from transformers import SamHQConfig, SamHQModel

    vision = dict(
        hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, mlp_dim=5120, global_attn_indexes=[7, 15, 23, 31]
    )
    return SamHQModel(SamHQConfig(vision_config=vision))


def _ram_backbone(swin: str) -> nn.Module:
    from transformers import SwinConfig, SwinModel

    if swin == "swin_b":
        return SwinModel(SwinConfig(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], image_size=384, window_size=12))
    return SwinModel(SwinConfig(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], image_size=384, window_size=12))


def _clip_tagger(name: str | None) -> nn.Module:
    from transformers import CLIPConfig, CLIPModel

    vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14)
    text = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
    return CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=768))


def audit(config: LyricsConfig, paper_figures: dict[str, float] | None = None) -> list[AuditRow]:
    """Count every component of `config` at full size on the meta device; `paper_figures` (e.g.
    `PAPER_FIGURES`) adds the paper's number beside the matching rows."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lyrics.models.conditional_generation import quiet_peft
    from lyrics.models.image_encoder import ImageEncoder
    from lyrics.models.mqformer import MQFormerModel

    refiner = config.refiner_config
    paper = paper_figures or {}
    rows: list[AuditRow] = []
    with torch.device("meta"):
        image_encoder = ImageEncoder(config.vision_config, config.vision_feature_layer)
        rows.append(AuditRow("image_encoder", _count(image_encoder), 0, note=config.vision_config.model_type))

        if refiner.tagger == "ram":
            # The paper's tagger is RAM++ with a Swin-B backbone; the released code uses RAM (Swin-L).
            swin = "swin_l" if "swin_l" in (refiner.tagger_model or "") else "swin_b"
            rows.append(
                AuditRow(
                    "refiner.tagger",
                    _count(_ram_backbone(swin)),
                    0,
                    note=f"RAM/RAM++ cannot be built here; counts its {swin} backbone as transformers SwinModel, "
                    "tagging head excluded",
                )
            )
        elif refiner.tagger == "clip":
            rows.append(AuditRow("refiner.tagger", _count(_clip_tagger(refiner.tagger_model)), 0, note="CLIP ViT-L/14 zero-shot"))
        if refiner.detector == "grounding_dino":
            rows.append(AuditRow("refiner.detector", _count(_grounding_dino()), 0, note="Grounding-DINO-T"))
        if refiner.segmenter in ("sam_hq", "sam"):
            rows.append(AuditRow("refiner.segmenter", _count(_sam_hq_vit_h()), 0, note="SAM-HQ ViT-H"))

        mqformer = MQFormerModel(config.mqformer_config)
        mq_count = _count(mqformer)
        rows.append(
            AuditRow("mqformer", mq_count, mq_count if config.train_mqformer else 0, paper.get("mqformer"))
        )
        projection = nn.Linear(config.mqformer_config.hidden_size, config.text_config.hidden_size)
        proj_count = _count(projection)
        rows.append(
            AuditRow("projection", proj_count, proj_count if config.train_mqformer else 0, paper.get("projection"))
        )

        llm = AutoModelForCausalLM.from_config(config.text_config)
        llm_count = _count(llm)
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_target_modules),
        )
        with quiet_peft():
            peft_model = get_peft_model(llm, lora)
        lora_count = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
        rows.append(AuditRow("llm", llm_count, 0, note=config.text_config.model_type))
        rows.append(
            AuditRow(
                "lora",
                lora_count,
                lora_count,
                paper.get("lora"),
                note=f"r={config.lora_r} on {','.join(config.lora_target_modules)}",
            )
        )

    trainable = sum(r.trainable for r in rows)
    total = sum(r.parameters for r in rows)
    rows.append(AuditRow("trainable", trainable, trainable, paper.get("trainable")))
    rows.append(AuditRow("total", total, trainable, paper.get("total"), note="every built part"))
    return rows


def audit_table(rows: list[AuditRow], preset: str):
    """The audit as a rich table (`lyrics audit`): counts beside the paper's, the difference green
    within `TOLERANCE`, yellow beyond."""
    from rich.table import Table

    table = Table(title=f"Lyrics parameter audit ({preset})")
    for column in ("component", "parameters", "trainable", "paper", "rel. diff", "note"):
        table.add_column(column, justify="left" if column in ("component", "note") else "right")
    for row in rows:
        diff = row.relative_difference
        mark = "" if diff is None else ("[green]" if abs(diff) <= TOLERANCE else "[yellow]") + f"{diff:+.2%}"
        paper = "-" if row.paper is None else f"{row.paper / 1e6:,.0f}M"
        table.add_row(row.component, f"{row.parameters:,}", f"{row.trainable:,}", paper, mark, row.note)
    return table


def audit_json(rows: list[AuditRow]) -> dict:
    """One object: `mqformer`, `projection`, `lora`, `trainable`, `total` as integer counts, plus rows."""
    by_name = {r.component: r for r in rows}
    out: dict = {
        "mqformer": by_name["mqformer"].parameters,
        "projection": by_name["projection"].parameters,
        "lora": by_name["lora"].parameters,
        "trainable": by_name["trainable"].trainable,
        "total": by_name["total"].parameters,
    }
    out["rows"] = [dict(asdict(r), relative_difference=r.relative_difference) for r in rows]
    out["within_tolerance"] = all(
        abs(r.relative_difference) <= TOLERANCE
        for r in rows
        if r.paper is not None and r.component in ("mqformer", "projection", "lora", "trainable")
    )
    return out


# --- training cost: FLOPs per sample and per step, GPU-hours of the paper's schedule ----------------
#
# Counting convention (model FLOPs, as MFU is usually defined):
# * FLOPs of one training step as autograd runs it, counted by `torch.utils.flop_counter` over a
#   forward and backward of the real modules built on the meta device: matrix products and attention
#   (mm, addmm, bmm, SDPA through its math path), 2 FLOPs per multiply-add. Elementwise ops, norms,
#   softmax, losses and the optimizer are not counted.
# * Frozen parts count their forward only: the image encoder runs under `no_grad` as the recipes run
#   it. Trainable parts (stage 1: the MQ-Former and its heads; stage 2: the MQ-Former and projection
#   when `train_mqformer`) count forward + backward (gradients of inputs and weights, about 2x the
#   forward). The frozen LLM under LoRA counts forward + the backward through its activations (the
#   gradient has to reach the LoRA weights of earlier layers and the visual tokens: about 1x its
#   forward, no weight gradients) + LoRA's own.
# * Attention is counted in full (a causal mask does not halve it); activation recomputation
#   (gradient checkpointing) is not counted: it adds about one forward of the checkpointed parts to
#   what the GPU does, not to the model FLOPs.
# * The visual refiner runs once per image, offline (`lyrics refine`), not in a training step: it is
#   not counted.
# * Every sample has the `Workload`'s lengths (padded batches at the recipes' limits), every mask is
#   all ones and every objective has targets; per step = per sample x global batch (ITC's
#   batch x batch similarities, the only term that grows with the batch, are negligible).

# Paper section 4: "We train the Lyrics on 16xA100 GPUs for 600,000 steps in the vision-language
# representation alignment stage with a global batch size of 512, and 200,000 steps in the
# vision-to-language generative learning stage with a global batch size of 64."
PAPER_SCHEDULE = {"stage1": (600_000, 512), "stage2": (200_000, 64)}
PAPER_GPUS = 16
A100_BF16_TFLOPS = 312.0  # dense bf16 tensor-core peak of an A100


@dataclass
class Workload:
    """Per-sample lengths the cost model (and `bench/gpu.py`) run at; the defaults are the paper
    recipes' limits (configs/stage1/paper.yaml, configs/stage2/paper.yaml).

    Args:
        objects: refiner objects per image (the paper preset keeps at most 100).
        caption_tokens: stage 1 "[CLS] caption [SEP]" (`data.max_caption_tokens`).
        spatial_tokens: stage 1 "[BOS] spatial text [SEP]" (`data.max_spatial_tokens`).
        llm_tokens: stage 2 prompt + response in LLM tokens, the visual tokens included (`model.max_length`).
        response_tokens: stage 2 tokens with a loss (the output layer runs there only).
    """

    objects: int = 100
    caption_tokens: int = 32
    spatial_tokens: int = 160
    llm_tokens: int = 512
    response_tokens: int = 128

    def fitted(self, config: LyricsConfig) -> "Workload":
        """The same lengths, capped at what `config` holds (the tiny preset's 8 objects, 128 MQ-Former
        positions, 256 LLM positions)."""
        mq = config.mqformer_config
        objects = min(self.objects, config.refiner_config.max_objects)
        caption = min(self.caption_tokens, mq.max_position_embeddings // 2)
        spatial = min(self.spatial_tokens, mq.max_position_embeddings - caption)
        llm = min(self.llm_tokens, config.text_config.max_position_embeddings)
        llm = max(llm, config.num_image_tokens + 4)
        response = max(1, min(self.response_tokens, llm - config.num_image_tokens - 2))
        return Workload(objects, caption, spatial, llm, response)


def with_image_token(config: LyricsConfig) -> LyricsConfig:
    """A copy of `config` whose `<image>` placeholder is the LLM's last token id when none is set (a
    processor sets it when it adds the token), so that synthetic stage-2 batches need no tokenizer."""
    config = copy.deepcopy(config)
    if config.image_token_index is None:
        config.image_token_index = config.text_config.vocab_size - 1
    return config


def stage1_inputs(config: LyricsConfig, workload: Workload, batch: int, device="cpu", seed: int = 0) -> dict:
    """A stage-1 batch at the workload's lengths: `pixel_values` for the frozen image encoder and the
    `LyricsForPretraining.forward` arguments (random ids, all-ones masks, 15% of the spatial tokens
    masked for MSP, at least one). Random values on a real device, shapes only on meta."""
    mq = config.mqformer_config
    vision = config.vision_config
    g = torch.Generator().manual_seed(seed)

    def ids(length: int) -> torch.Tensor:
        return torch.randint(1000, min(mq.vocab_size, 30000), (batch, length), generator=g).to(device)

    ones = lambda length: torch.ones(batch, length, dtype=torch.long, device=device)  # noqa: E731
    caption, spatial = ids(workload.caption_tokens), ids(workload.spatial_tokens)
    caption[:, 0] = mq.cls_token_id if mq.cls_token_id is not None else 101
    masked = torch.rand(batch, workload.spatial_tokens, generator=g).to(device) < 0.15
    masked[:, 1] = True
    msp_ids = spatial.masked_fill(masked, mq.mask_token_id if mq.mask_token_id is not None else 103)
    return dict(
        pixel_values=torch.randn(batch, 3, vision.image_size, vision.image_size, generator=g).to(device),
        caption_ids=caption,
        caption_attention_mask=ones(workload.caption_tokens),
        local_features=torch.randn(batch, workload.objects, mq.local_feature_size, generator=g).to(device),
        local_attention_mask=ones(workload.objects),
        spatial_ids=spatial,
        spatial_attention_mask=ones(workload.spatial_tokens),
        msp_ids=msp_ids,
        msp_labels=spatial.masked_fill(~masked, -100),
    )


def stage2_inputs(config: LyricsConfig, workload: Workload, batch: int, device="cpu", seed: int = 0, labels: bool = True) -> dict:
    """`LyricsForConditionalGeneration.forward` arguments at the workload's lengths: prompts of
    `llm_tokens` tokens that open with the image placeholders (`config.image_token_index`, see
    `with_image_token`), labels on the last `response_tokens`; `pixel_values` and refiner objects."""
    if config.image_token_index is None:
        raise ValueError("config.image_token_index is not set; use with_image_token(config)")
    mq = config.mqformer_config
    vision = config.vision_config
    g = torch.Generator().manual_seed(seed)
    vocab = config.text_config.vocab_size
    text = torch.randint(3, vocab - 1, (batch, workload.llm_tokens - config.num_image_tokens), generator=g)
    text[text == config.image_token_index] = 3
    input_ids = torch.cat([torch.full((batch, config.num_image_tokens), config.image_token_index), text], dim=1).to(device)
    out = dict(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        pixel_values=torch.randn(batch, 3, vision.image_size, vision.image_size, generator=g).to(device),
        local_features=torch.randn(batch, workload.objects, mq.local_feature_size, generator=g).to(device),
        local_attention_mask=torch.ones(batch, workload.objects, dtype=torch.long, device=device),
    )
    if labels:
        out["labels"] = input_ids.masked_fill(torch.arange(workload.llm_tokens, device=device) < workload.llm_tokens - workload.response_tokens, -100)
    return out


@dataclass
class StageCost:
    """Model FLOPs of one training sample of a stage (see the convention above) and its schedule."""

    stage: str
    frozen_forward: int  # the frozen image encoder's forward
    forward: int  # every other forward (MQ-Former, heads, projection, LLM)
    backward: int
    batch_size: int  # global batch of the schedule
    steps: int

    @property
    def per_sample(self) -> int:
        return self.frozen_forward + self.forward + self.backward

    @property
    def per_step(self) -> int:
        return self.per_sample * self.batch_size

    @property
    def total(self) -> int:
        return self.per_step * self.steps

    def gpu_hours(self, mfu: float, peak_tflops: float) -> float:
        return self.total / (mfu * peak_tflops * 1e12) / 3600


class _AssumeFullMasks(TorchDispatchMode):
    """Answers the value questions models ask of meta tensors (`mask.all()`, `labels.any()`,
    `int(ids.max())`), which have no values: booleans are True (every position is real, every
    objective has targets), numbers 0."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and args[0].device.type == "meta":
            return True if args[0].dtype == torch.bool else 0
        return func(*args, **(kwargs or {}))


def _count_step(encode, forward) -> tuple[int, int, int]:
    """(frozen forward, forward, backward) FLOPs of `loss = forward(encode())`, `loss.backward()`."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), _AssumeFullMasks():
        with torch.no_grad():
            features = encode()
        frozen = counter.get_total_flops()
        loss = forward(features)
        forward_total = counter.get_total_flops()
        loss.backward()
        total = counter.get_total_flops()
    return frozen, forward_total - frozen, total - forward_total


def stage1_flops(config: LyricsConfig, workload: Workload, batch: int = 2) -> tuple[int, int, int]:
    """(frozen forward, forward, backward) FLOPs of a stage-1 step of `batch` samples on the meta device:
    the image encoder, then `LyricsForPretraining.forward` (all four objectives) and its backward."""
    from lyrics.models.image_encoder import ImageEncoder
    from lyrics.models.pretraining import LyricsForPretraining

    with torch.device("meta"):
        encoder = ImageEncoder(config.vision_config, config.vision_feature_layer).requires_grad_(False)
        model = LyricsForPretraining(config).train()
    inputs = stage1_inputs(config, workload, batch, "meta")
    pixel_values = inputs.pop("pixel_values")
    return _count_step(lambda: encoder(pixel_values), lambda embeds: model(image_embeds=embeds, **inputs).loss)


def stage2_flops(config: LyricsConfig, workload: Workload, batch: int = 2) -> tuple[int, int, int]:
    """(frozen forward, forward, backward) FLOPs of a stage-2 step of `batch` samples on the meta device.

    `LyricsForConditionalGeneration.forward` finds the image placeholders and the response rows by
    value, which meta tensors lack, so this runs its steps on the model's own parts: image encoder,
    `visual_tokens` (MQ-Former + projection), the LoRA LLM over [visual tokens; text] with the output
    layer on the last `response_tokens` positions, cross-entropy. The tests check that this is the
    count of the real forward on real tensors."""
    import torch.nn.functional as F

    from lyrics.models.conditional_generation import LyricsForConditionalGeneration, VisualInputs

    config = with_image_token(config)
    with torch.device("meta"):
        model = LyricsForConditionalGeneration(config)
        model.enable_lora()
    model.train()
    inputs = stage2_inputs(config, workload, batch, "meta")
    text_ids = inputs["input_ids"][:, config.num_image_tokens :]
    response = workload.response_tokens

    def forward(image_embeds):
        tokens = model.visual_tokens(
            VisualInputs(image_embeds=image_embeds, local_features=inputs["local_features"], local_attention_mask=inputs["local_attention_mask"])
        )
        text = model.llm.get_input_embeddings()(text_ids)
        embeds = torch.cat([tokens.to(text.dtype), text], dim=1)
        logits = model.language_model(inputs_embeds=embeds, logits_to_keep=response).logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), text_ids[:, -response:].reshape(-1))

    return _count_step(lambda: model.image_encoder(inputs["pixel_values"]), forward)


def training_cost(
    config: LyricsConfig, workload: Workload | None = None, schedule: dict[str, tuple[int, int]] | None = None, batch: int = 2
) -> list[StageCost]:
    """Per-sample FLOPs of both stages of `config` at full size (meta device, a few seconds), with the
    schedule's (steps, global batch) per stage (default: the paper's). `batch` samples are counted and
    divided (stage 1's ITM needs two)."""
    workload = (workload or Workload()).fitted(config)
    schedule = schedule or PAPER_SCHEDULE
    costs = []
    for stage, count in (("stage1", stage1_flops), ("stage2", stage2_flops)):
        frozen, forward, backward = count(config, workload, batch)
        steps, global_batch = schedule[stage]
        costs.append(StageCost(stage, frozen // batch, forward // batch, backward // batch, global_batch, steps))
    return costs


COST_CONVENTION = (
    "model FLOPs (torch.utils.flop_counter on the meta device: matmuls and attention, 2 per multiply-add); "
    "frozen image encoder forward only; trainable parts forward + backward; frozen LLM forward + backward "
    "through its activations for LoRA; full attention; no recomputation; refiner offline, not counted"
)


def cost_json(
    costs: list[StageCost], workload: Workload, mfu: float = 0.4, peak_tflops: float = A100_BF16_TFLOPS, gpus: int = PAPER_GPUS
) -> dict:
    """One object:
    `convention` (str), `workload` (the lengths), `mfu`, `peak_tflops`, `gpus`, `paper_gpus` (16),
    `stages`: {`stage1`, `stage2`: {`frozen_forward_flops_per_sample`, `forward_flops_per_sample`,
    `backward_flops_per_sample`, `flops_per_sample`, `batch_size`, `flops_per_step`, `steps`,
    `total_flops`, `gpu_hours`, `wall_hours` (gpu_hours / gpus)}}, and over both stages
    `total_flops`, `gpu_hours`, `wall_hours`. FLOPs are integers, hours floats."""
    stages = {}
    for cost in costs:
        hours = cost.gpu_hours(mfu, peak_tflops)
        stages[cost.stage] = {
            "frozen_forward_flops_per_sample": cost.frozen_forward,
            "forward_flops_per_sample": cost.forward,
            "backward_flops_per_sample": cost.backward,
            "flops_per_sample": cost.per_sample,
            "batch_size": cost.batch_size,
            "flops_per_step": cost.per_step,
            "steps": cost.steps,
            "total_flops": cost.total,
            "gpu_hours": hours,
            "wall_hours": hours / gpus,
        }
    gpu_hours = sum(s["gpu_hours"] for s in stages.values())
    return {
        "convention": COST_CONVENTION,
        "workload": asdict(workload),
        "mfu": mfu,
        "peak_tflops": peak_tflops,
        "gpus": gpus,
        "paper_gpus": PAPER_GPUS,
        "stages": stages,
        "total_flops": sum(s["total_flops"] for s in stages.values()),
        "gpu_hours": gpu_hours,
        "wall_hours": gpu_hours / gpus,
    }


def _si(flops: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}FLOP"
    return f"{flops:.3g} FLOP"


def cost_text(report: dict, title: str = "") -> str:
    """`cost_json`'s report as an aligned table with a few lines of context."""
    w = report["workload"]
    lines = [
        f"Lyrics training cost{f' ({title})' if title else ''}: model FLOPs counted on the meta device",
        f"workload: {w['objects']} objects; stage 1 caption {w['caption_tokens']} + spatial {w['spatial_tokens']} tokens; "
        f"stage 2 {w['llm_tokens']} LLM tokens, {w['response_tokens']} with a loss",
        "",
        f"{'stage':<7}{'frozen fwd':>14}{'fwd':>14}{'bwd':>14}{'per sample':>14}{'batch':>7}{'per step':>14}{'steps':>9}"
        f"{'total':>14}{'GPU-hours':>11}{'wall h':>9}",
    ]
    for stage, s in report["stages"].items():
        lines.append(
            f"{stage:<7}{_si(s['frozen_forward_flops_per_sample']):>14}{_si(s['forward_flops_per_sample']):>14}"
            f"{_si(s['backward_flops_per_sample']):>14}{_si(s['flops_per_sample']):>14}{s['batch_size']:>7}"
            f"{_si(s['flops_per_step']):>14}{s['steps']:>9,}{_si(s['total_flops']):>14}{s['gpu_hours']:>11,.0f}{s['wall_hours']:>9,.1f}"
        )
    lines.append(f"{'both':<7}{'':>14}{'':>14}{'':>14}{'':>14}{'':>7}{'':>14}{'':>9}{_si(report['total_flops']):>14}"
                 f"{report['gpu_hours']:>11,.0f}{report['wall_hours']:>9,.1f}")  # fmt: skip
    lines += [
        "",
        f"GPU-hours at MFU {report['mfu']:.2f} of {report['peak_tflops']:g} TFLOP/s per GPU; wall hours on {report['gpus']} GPUs "
        f"= {report['wall_hours'] / 24:.1f} days (the paper trained on {report['paper_gpus']} x A100, wall time not reported).",
        f"Counting: {report['convention']}.",
    ]
    return "\n".join(lines)
