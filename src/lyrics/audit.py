"""Parameter audit (paper section 4, "Implementation Detail").

Builds every part of a paper-scale Lyrics on PyTorch's meta device (shapes only: no memory, a few
seconds) through the same classes a real run uses, counts parameters, and compares with the paper:
MQ-Former 195M, projection 4M, LoRA 79M, 278M trainable, 14.9B in all.

RAM++ cannot be built here (not on PyPI, and it breaks on recent transformers - NOTES section 3);
its row counts its Swin backbone, built as transformers' `SwinModel`, and says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

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
