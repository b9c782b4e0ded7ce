"""Named model presets and YAML overrides.

* `paper`    - the model of the paper (section 4): CLIP ViT-L/14 (257 x 1024 features), BERT-base
               MQ-Former with 32 visual + 32 grounding queries, local features per object =
               Grounding-DINO decoder state 256 + box 4 + SAM-HQ pooled embedding 256, a LLaMA with
               Vicuna-13B's shape, LoRA on W_q and W_v.
* `released` - the authors' released code (docs/design.md, "Released code vs. paper"): EVA ViT-g (1408), 32 + 64 queries,
               260-d detection features, no SAM, LoRA on q/k/v with r=8, MQ-Former frozen in stage 2,
               `tag: [x1, y1, x2, y2]` box text with [0, 1] coordinates.
* `tiny`     - the same architecture at toy widths, for tests and plumbing.

`load_config("paper", "override.yaml", ["mqformer_config.num_grounding_query_tokens=0"])` applies a
YAML file and dotted `key=value` overrides on top of a preset; any field of any sub-config can be
overridden.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import yaml

from lyrics.configuration import LyricsConfig

_VICUNA_13B = dict(
    model_type="llama",
    vocab_size=32000,
    hidden_size=5120,
    intermediate_size=13824,
    num_hidden_layers=40,
    num_attention_heads=40,
    num_key_value_heads=40,
    max_position_embeddings=2048,
    rms_norm_eps=1e-6,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    tie_word_embeddings=False,
)


def paper() -> dict[str, Any]:
    return dict(
        vision_config=dict(
            model_type="clip_vision_model",
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
            projection_dim=768,
            hidden_act="quick_gelu",
        ),
        # The paper's refiner: RAM++ (Swin-B) -> Grounding-DINO-T -> SAM-HQ ViT-H. RAM++ runs only
        # where the `ram` package is importable; `refiner_config.tagger=clip` is the portable choice.
        refiner_config=dict(tagger="ram", tagger_model="ram_plus_swin_b"),
        mqformer_config=dict(num_query_tokens=32, num_grounding_query_tokens=32),
        text_config=dict(_VICUNA_13B),
        vision_feature_layer=-2,
        lora_r=96,
        lora_alpha=192,
        lora_dropout=0.05,
        lora_target_modules=["q_proj", "v_proj"],
        train_mqformer=True,
    )


def released() -> dict[str, Any]:
    return dict(
        # EVA ViT-g as BLIP-2 ships it in transformers: 39 layers (the last one is dropped) with the
        # Q-Former's `ln_vision` stored as `post_layernorm`.
        vision_config=dict(
            model_type="blip_2_vision_model",
            hidden_size=1408,
            intermediate_size=6144,
            num_hidden_layers=39,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
        ),
        refiner_config=dict(
            tagger="ram",
            tagger_model="ram_swin_l",
            segmenter="none",
            segmenter_model=None,
            segmentation_feature_size=0,
            max_objects=900,
            coordinate_format="unit3",
            spatial_format="released",
        ),
        mqformer_config=dict(
            num_query_tokens=32,
            num_grounding_query_tokens=64,
            local_feature_layernorm=False,
            vocab_size=30523,  # BERT + [DEC], as LAVIS resizes it
            bos_token_id=None,
            mlm_token_id=103,  # the released MSP uses [MASK]; no extra tokens
        ),
        text_config=dict(_VICUNA_13B),
        vision_feature_layer=-1,
        lora_r=8,
        lora_alpha=32,
        lora_dropout=0.05,
        lora_target_modules=["q_proj", "k_proj", "v_proj"],
        train_mqformer=False,
        msp_unit="component",
    )


def tiny() -> dict[str, Any]:
    return dict(
        vision_config=dict(
            model_type="clip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            projection_dim=32,
        ),
        refiner_config=dict(
            tagger="toy",
            tagger_model=None,
            detector="toy",
            detector_model=None,
            segmenter="toy",
            segmenter_model=None,
            detection_feature_size=24,
            box_feature_size=4,
            segmentation_feature_size=8,
            max_objects=8,
        ),
        mqformer_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=128,
            num_query_tokens=4,
            num_grounding_query_tokens=4,
            contrastive_dim=16,
        ),
        text_config=dict(
            model_type="llama",
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=256,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        ),
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        lora_target_modules=["q_proj", "v_proj"],
    )


PRESETS: dict[str, Callable[[], dict[str, Any]]] = {"paper": paper, "released": released, "tiny": tiny}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override` laid over it, nested mappings merged key by key (a copy; neither changes)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_dotted(overrides: list[str]) -> dict[str, Any]:
    """Turn `["a.b=1", "c=[x, y]"]` into a nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _scalar(raw)
    return nested


def _scalar(raw: str):
    """YAML scalar, except that `1e-3` is a number (YAML 1.1 reads exponents without a dot as text)."""
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _check_keys(values: dict[str, Any], origin: str) -> None:
    """Reject misspelt fields: a YAML override that silently does nothing is worse than an error."""
    from lyrics.configuration import MQFormerConfig, RefinerConfig

    # Every declared field, including those whose default is None (`default_config_fields` omits them).
    top = LyricsConfig.__dataclass_fields__
    known_sub = {
        "mqformer_config": MQFormerConfig.__dataclass_fields__,
        "refiner_config": RefinerConfig.__dataclass_fields__,
    }
    for key, value in values.items():
        if key not in top and key not in ("vision_config", "text_config"):
            raise ValueError(f"{origin}: unknown LyricsConfig field {key!r}")
        if key in known_sub and isinstance(value, dict):
            for sub in value:
                if sub not in known_sub[key]:
                    raise ValueError(f"{origin}: unknown {key} field {sub!r}")


def preset_dict(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {preset_names()}")
    return PRESETS[name]()


def load_config(
    preset: str | Path = "paper",
    overrides: str | Path | dict[str, Any] | None = None,
    dotted: list[str] | None = None,
) -> LyricsConfig:
    """Build a `LyricsConfig` from a preset name (or a saved config directory / JSON file), then apply
    a YAML file (or dict) of overrides and dotted `key=value` overrides, in that order."""
    preset_path = Path(str(preset))
    if str(preset) in PRESETS:
        values = preset_dict(str(preset))
    elif preset_path.is_dir() or preset_path.suffix == ".json":
        values = LyricsConfig.from_pretrained(str(preset_path)).to_dict()
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of {preset_names()} or give a config directory")

    if overrides is not None:
        if isinstance(overrides, dict):
            data, origin = overrides, "overrides"
        else:
            path = Path(overrides)
            if not path.is_file():
                raise FileNotFoundError(f"override file {path} does not exist")
            data = yaml.safe_load(path.read_text()) or {}
            origin = str(path)
            if not isinstance(data, dict):
                raise ValueError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
        _check_keys(data, origin)
        values = merge(values, data)
    if dotted:
        data = parse_dotted(dotted)
        _check_keys(data, "command-line override")
        values = merge(values, data)
    return LyricsConfig(**values)
