"""A tiny Lyrics checkpoint with a live toy refiner, saved in the real format, and toy-world pictures.

The checkpoint is random (answers are gibberish); it exists so the inference surfaces can be tested
end to end: greedy decoding is deterministic, so batched or served answers must equal single ones.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import tiny
from lyrics.toyworld import spec

TOY_REFINER = {
    "refiner_config.tagger": "toy",
    "refiner_config.detector": "toy",
    "refiner_config.segmenter": "toy",
    "refiner_config.detection_feature_size": 24,
    "refiner_config.box_feature_size": 4,
    "refiner_config.segmentation_feature_size": 8,
}


def build_checkpoint(root: str | Path, seed: int = 0) -> Path:
    """Write `root/ckpt` (plus the frozen LLM and vision tower it points to) and return its path."""
    from lyrics.models.conditional_generation import LyricsForConditionalGeneration
    from lyrics.models.processing import LyricsProcessor, ProcessorConfig, load_image_processor

    root = Path(root)
    tokenizer = tiny.llm_tokenizer()
    tiny.save_llm(root / "llm", tokenizer, seed=seed)
    tiny.save_vision(root / "vision", seed=seed)
    config = tiny.lyrics_config(**TOY_REFINER)
    proc = LyricsProcessor(
        tiny.llm_tokenizer(), ProcessorConfig(num_image_tokens=config.num_image_tokens), load_image_processor(root / "vision")
    )
    torch.manual_seed(seed)
    model = LyricsForConditionalGeneration.from_components(config, root / "llm", root / "vision", processor=proc)
    model.enable_lora()
    with torch.no_grad():  # LoRA B starts at zero; random values make the adapter matter
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    model.save_pretrained(root / "ckpt", processor=proc)
    return root / "ckpt"


def scene(index: int, size: int = 96) -> Image.Image:
    """A toy-world picture: 1-3 flat shapes in the toy colours on the light background."""
    colours = list(spec.COLOURS.values())
    image = Image.new("RGB", (size, size), spec.BACKGROUND_RGB)
    draw = ImageDraw.Draw(image)
    for k in range(1 + index % 3):
        colour = colours[(index + 2 * k) % len(colours)]
        x = 8 + (index * 17 + k * 29) % (size - 40)
        y = 8 + (index * 11 + k * 37) % (size - 40)
        r = 12 + (index + k) % 3 * 3
        if (index + k) % 2:
            draw.rectangle((x, y, x + 2 * r, y + 2 * r), fill=colour)
        else:
            draw.ellipse((x, y, x + 2 * r, y + 2 * r), fill=colour)
    return image


def with_refiner(checkpoint, dest, trained=None, refiner=None):
    """A copy of `checkpoint` whose config.json records `trained` (what the recipes write) and/or has
    other `refiner_config` fields (an older checkpoint of another preset)."""
    shutil.copytree(checkpoint, dest)
    config = json.loads((dest / "config.json").read_text())
    config["refiner_config"] = {**config.get("refiner_config", {}), **(refiner or {})}
    if trained is not None:
        from lyrics.configuration import RefinerConfig
        from lyrics.refiner.provenance import refiner_fields

        config["trained_refiner_config"] = {**refiner_fields(RefinerConfig(**config["refiner_config"])), **trained}
    (dest / "config.json").write_text(json.dumps(config))
    return dest
