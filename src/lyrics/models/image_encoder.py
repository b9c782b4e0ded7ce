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
        """Load the tower with transformers' `from_pretrained` (a CLIP checkpoint loads its vision part)."""
        from transformers import AutoConfig, Blip2VisionModel, CLIPVisionModel

        model_type = AutoConfig.from_pretrained(path).model_type
        if model_type in ("clip", "clip_vision_model"):
            model = CLIPVisionModel.from_pretrained(path, **kwargs)
        elif model_type in ("blip-2", "blip_2_vision_model"):
            model = Blip2VisionModel.from_pretrained(path, **kwargs)
        else:
            model = AutoModel.from_pretrained(path, **kwargs)
        return cls(model.config, feature_layer, vision_model=model)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, 3, H, W)` -> `(B, N, D)` features (N = patches + CLS), before `ln_vision`."""
        outputs = self.vision_model(pixel_values=pixel_values, output_hidden_states=True)
        return outputs.hidden_states[self.feature_layer]
