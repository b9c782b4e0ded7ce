"""The frozen image encoder that gives the global visual features (paper section 3.1).

A transformers vision tower (`CLIPVisionModel` for the paper's CLIP ViT-L/14, `Blip2VisionModel` for
the released code's EVA ViT-g); Lyrics reads one of its hidden layers. The paper's 257 x 1024 features
are CLIP ViT-L/14's 256 patches + CLS at 224 px.

BLIP-2's `ln_vision` LayerNorm over these features is trained with the Q-Former, so it lives in the
trainable Lyrics models (`image_layernorm`), not here: the tower's output can then be cached once and
reused across epochs and ablations.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, PreTrainedConfig

from lyrics.models.loading import load_pretrained


# What a whole CLIP / BLIP-2 checkpoint holds beside the vision tower: left unused by design.
CLIP_TEXT_PARTS = (r"^text_model\.", r"^text_projection\.", r"^visual_projection\.", r"^logit_scale$")
BLIP2_OTHER_PARTS = (r"^qformer\.", r"^query_tokens$", r"^language_projection\.", r"^language_model\.", r"^text_projection\.",
                     r"^vision_projection\.", r"^itm_head\.", r"^embeddings\.")  # fmt: skip


def build_vision_tower(vision_config: PreTrainedConfig) -> nn.Module:
    """Build a vision tower from its config. `Blip2VisionConfig` is not registered with `AutoModel`,
    so the two towers Lyrics uses are named explicitly; anything else goes through `AutoModel`."""
    from transformers import Blip2VisionModel, CLIPVisionModel

    towers = {"clip_vision_model": CLIPVisionModel, "blip_2_vision_model": Blip2VisionModel}
    tower = towers.get(vision_config.model_type)
    return tower(vision_config) if tower is not None else AutoModel.from_config(vision_config)


class ImageEncoder(nn.Module):
    """A frozen vision tower returning one hidden layer.

    Args:
        vision_config: a `CLIPVisionConfig` or `Blip2VisionConfig`.
        feature_layer (`int`): index into the tower's hidden states (-2: drop the last layer, as LAVIS
            does for BLIP-2 and LLaVA does for CLIP).
        vision_model (`nn.Module`, *optional*): an already built tower (e.g. from `from_pretrained`).
    """

    def __init__(self, vision_config: PreTrainedConfig, feature_layer: int = -2, vision_model: nn.Module | None = None):
        super().__init__()
        self.vision_model = vision_model if vision_model is not None else build_vision_tower(vision_config)
        self.feature_layer = feature_layer
        self.num_features = vision_config.hidden_size

    @classmethod
    def from_pretrained(cls, path: str, feature_layer: int = -2, **kwargs) -> "ImageEncoder":
        """Load the tower with transformers' `from_pretrained`, refusing a checkpoint that lacks any of
        its weights (`lyrics.models.loading.MissingWeightsError`).

        `path` holds a vision tower (`CLIPVisionModel`, `Blip2VisionModel`), a whole CLIP (its vision
        part loads, the text tower is left unused) or a whole BLIP-2 (`Blip2ForConditionalGeneration`,
        `Blip2Model`, ...: the tower is built from `config.vision_config` and its `vision_model.*`
        weights are read under their bare names; the Q-Former and LLM are left unused)."""
        from transformers import AutoConfig, Blip2VisionModel, CLIPVisionModel

        config = AutoConfig.from_pretrained(str(path))
        if config.model_type in ("clip", "clip_vision_model"):
            model = load_pretrained(CLIPVisionModel, path, expected_unused=CLIP_TEXT_PARTS, **kwargs)
        elif config.model_type == "blip-2":
            kwargs = {"config": config.vision_config, "key_mapping": {r"^vision_model\.": ""}, **kwargs}
            model = load_pretrained(Blip2VisionModel, path, expected_unused=BLIP2_OTHER_PARTS, **kwargs)
        elif config.model_type == "blip_2_vision_model":
            model = load_pretrained(Blip2VisionModel, path, **kwargs)
        else:
            model = load_pretrained(AutoModel, path, **kwargs)
        return cls(model.config, feature_layer, vision_model=model)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, 3, H, W)` -> `(B, N, D)` features (N = patches + CLS), before `ln_vision`."""
        outputs = self.vision_model(pixel_values=pixel_values, output_hidden_states=True)
        return outputs.hidden_states[self.feature_layer]
