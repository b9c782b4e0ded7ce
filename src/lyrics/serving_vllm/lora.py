"""A stage-2 checkpoint served with its LoRA adapter through vLLM's own LoRA support.

vLLM applies LoRA adapters to a base model at request time (`--enable-lora --lora-modules NAME=PATH`
on the server, `LoRARequest` offline), so one base serves many adapters and a request picks one by
its `model` name. A stage-2 checkpoint (`save_pretrained`) holds what training changed:

    config.json, lyrics_model.safetensors, processor_config.json, tokenizer/, image_processor/
    adapter/                     PEFT LoRA on the LLM alone (adapter_config.json, adapter_model.safetensors)

with the frozen LLM and image encoder referenced by path. vLLM needs the base as one folder in the
layout `lyrics merge` writes, so `base_folder` writes exactly that with the fold skipped: the
checkpoint is loaded as `lyrics merge` loads it (the LLM's vocabulary grown for `<image>` as in
training), its LoRA layers are removed unmerged (PEFT's `unload`), and the project's own
`save_merged` writes the folder (default `CKPT/vllm_base/`). `source.json` in it records what it
was built from, so a later `serve` reuses it until the checkpoint or its base paths change.

The adapter's keys stay as PEFT wrote them, relative to the bare LLM
(`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`); the plugin's model class maps
`model.` to `language_model.model.` for vLLM's LoRA loader (`LyricsForConditionalGeneration.
hf_to_vllm_mapper`), so no renamed copy of the adapter is written.

What vLLM 0.32 cannot serve is refused here, before minutes of loading, naming the field of
`adapter/adapter_config.json`: modules trained in full beside LoRA (`modules_to_save`), targets
other than the decoder's linear layers, DoRA, trained biases.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from lyrics.serving_vllm.folder import TRAINED_WEIGHTS, NotAMergedLyricsModel, check_merged_folder, refuse_instruction_aware

ADAPTER = "adapter"
BASE_FOLDER = "vllm_base"
SOURCE_FILE = "source.json"
# The decoder layers vLLM's LoRA wraps in a LLaMA-family model (it packs q/k/v and gate/up into one
# layer each and splits the adapter's matrices to match).
SERVABLE_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# `--max-lora-rank` takes one of these (vllm.config.lora.MaxLoRARanks, 0.32).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# The files whose contents the base folder is made of, besides the frozen parts named by path.
_SOURCE_FILES = ("config.json", TRAINED_WEIGHTS, "processor_config.json")


class NotAServableAdapter(NotAMergedLyricsModel):
    """A stage-2 checkpoint whose adapter vLLM's LoRA cannot apply; the message names the field."""


@dataclass(frozen=True)
class Stage2:
    """A checked stage-2 checkpoint: where it is, its adapter, and the rank vLLM must allow."""

    folder: Path
    adapter: Path
    rank: int

    @property
    def max_lora_rank(self) -> int:
        """The smallest `--max-lora-rank` vLLM accepts that holds this adapter's rank."""
        return next(r for r in VLLM_LORA_RANKS if r >= self.rank)


def is_stage2(path: str | Path) -> bool:
    """A folder with `adapter/` is served through vLLM's LoRA, never as a merged folder."""
    return (Path(path) / ADAPTER).is_dir()


def check_stage2(path: str | Path) -> Stage2:
    """`path` as a `Stage2` when vLLM can serve it with its adapter, else `NotAServableAdapter`
    naming the missing part or the adapter_config.json field that does not fit."""
    path = Path(path)
    missing = [name for name in (*_SOURCE_FILES, "tokenizer", "image_processor", f"{ADAPTER}/adapter_config.json",
                                 f"{ADAPTER}/adapter_model.safetensors") if not (path / name).exists()]  # fmt: skip
    if missing:
        raise NotAServableAdapter(f"{path} is not a stage-2 checkpoint vLLM can serve: missing {', '.join(missing)}")
    config_file = path / "config.json"
    config = json.loads(config_file.read_text())
    if config.get("model_type") != "lyrics":
        raise NotAServableAdapter(f"{config_file}: model_type is {config.get('model_type')!r}, not 'lyrics'")
    refuse_instruction_aware(config_file, config)
    adapter_file = path / ADAPTER / "adapter_config.json"
    rank = _check_adapter_config(adapter_file, json.loads(adapter_file.read_text()))
    return Stage2(path, path / ADAPTER, rank)


def _check_adapter_config(where: Path, adapter: dict) -> int:
    """The adapter's largest rank, after refusing what vLLM 0.32's LoRA does not apply as PEFT does."""
    if adapter.get("peft_type", "LORA") != "LORA":
        raise NotAServableAdapter(f"{where}: peft_type is {adapter.get('peft_type')!r}; vLLM serves LoRA adapters: run `lyrics merge`")
    if adapter.get("modules_to_save"):
        raise NotAServableAdapter(
            f"{where}: modules_to_save {adapter['modules_to_save']} (trained in full beside LoRA); vLLM's LoRA "
            "replaces no whole module but a classifier head: run `lyrics merge` and serve the merged folder"
        )
    targets = adapter.get("target_modules")
    if not isinstance(targets, list) or not targets or set(targets) - set(SERVABLE_TARGETS):
        raise NotAServableAdapter(
            f"{where}: target_modules {targets!r}; vLLM's LoRA serves a list of the decoder's linear layers "
            f"({', '.join(SERVABLE_TARGETS)}): run `lyrics merge` and serve the merged folder"
        )
    checks = (
        ("use_dora", not adapter.get("use_dora")),
        ("bias", adapter.get("bias", "none") == "none"),
        ("target_parameters", not adapter.get("target_parameters")),  # LoRA on raw parameters, not on layers
    )
    for field, fits in checks:
        if not fits:
            raise NotAServableAdapter(f"{where}: {field} is {adapter.get(field)!r}, which vLLM's LoRA does not serve: run `lyrics merge`")
    rank = max([int(adapter["r"]), *map(int, (adapter.get("rank_pattern") or {}).values())])
    if rank > VLLM_LORA_RANKS[-1]:
        raise NotAServableAdapter(f"{where}: r is {rank}; vLLM's --max-lora-rank goes up to {VLLM_LORA_RANKS[-1]}: run `lyrics merge`")
    return rank


def _source(stage2: Stage2) -> dict:
    """What the base folder is built from: the checkpoint's own files by content, the frozen LLM and
    image encoder by the paths its config names (resolved as `from_pretrained` resolves them)."""
    from lyrics.models.conditional_generation import _resolve

    config = json.loads((stage2.folder / "config.json").read_text())
    digests = {name: hashlib.sha256((stage2.folder / name).read_bytes()).hexdigest() for name in _SOURCE_FILES}
    return {
        "checkpoint": str(stage2.folder.resolve()),
        "files": digests,
        "text_model": _resolve(stage2.folder, config.get("text_model_name_or_path")),
        "vision_model": _resolve(stage2.folder, config.get("vision_model_name_or_path")),
    }


def base_folder(stage2: Stage2, out: str | Path | None = None) -> Path:
    """The folder vLLM serves `stage2`'s adapter on (default `CKPT/vllm_base`): reused when its
    `source.json` matches the checkpoint, else written as `lyrics merge` writes a folder, unmerged."""
    out = Path(out) if out is not None else stage2.folder / BASE_FOLDER
    source = _source(stage2)
    recorded = out / SOURCE_FILE
    before = json.loads(recorded.read_text()) if recorded.is_file() else {}
    if before == source:
        return check_merged_folder(out)
    if out.exists() and any(out.iterdir()) and before.get("checkpoint") != source["checkpoint"]:
        # never replace a folder this checkpoint did not write (a merged model, another run's base)
        raise NotAServableAdapter(
            f"{out} exists and is not {stage2.folder}'s base folder ({SOURCE_FILE} does not name it): "
            "remove it or give another --base"
        )
    write_base(stage2.folder, out)
    from lyrics.atomic import atomic_write_json

    atomic_write_json(recorded, source)  # last: a folder without it is rebuilt
    return check_merged_folder(out)


def write_base(checkpoint: Path, out: Path) -> None:
    """`lyrics merge CKPT --out OUT` with the fold skipped: the same loading and the same
    `save_merged`, given the LLM with its LoRA layers removed instead of folded in."""
    from lyrics.models.conditional_generation import LyricsForConditionalGeneration
    from lyrics.models.processing import LyricsProcessor

    model = LyricsForConditionalGeneration.from_pretrained(checkpoint)
    model.language_model = model.language_model.unload()
    model.save_merged(out, processor=LyricsProcessor.from_pretrained(checkpoint))


def check_shares_base(base: Stage2, other: Stage2) -> None:
    """Refuse `other`'s adapter on `base`'s base folder unless everything but the LoRA is the same.

    A stage-2 run trains its MQ-Former, `ln_vision` and projection too (`train_mqformer`, the
    default), and those sit in the base folder, not in the adapter: another run's adapter on this base
    would meet another run's vision path and answer wrongly without an error. Its trained weights,
    processor, frozen LLM and image encoder, and config (LoRA fields aside) must match."""
    mine, theirs = _source(base), _source(other)
    differ = [key for key in ("text_model", "vision_model") if mine[key] != theirs[key]]
    differ += [name for name in (TRAINED_WEIGHTS, "processor_config.json") if mine["files"][name] != theirs["files"][name]]
    differ += [f"config.json {key}" for key, _ in _config_key_set(base) ^ _config_key_set(other)]
    if differ:
        raise NotAServableAdapter(
            f"{other.folder}'s adapter does not fit {base.folder}'s base folder: {', '.join(sorted(set(differ)))} differ "
            "(a stage-2 run's own MQ-Former and projection live in the base, not in its adapter); serve it on its own base"
        )


def _config_key_set(stage2: Stage2) -> set[tuple[str, str]]:
    """config.json as (key, value) pairs, without what an adapter may change (the `lora_*` fields)
    and what `_source` compares resolved (the frozen parts' paths)."""
    config = json.loads((stage2.folder / "config.json").read_text())
    skip = ("text_model_name_or_path", "vision_model_name_or_path", "transformers_version")
    return {(k, json.dumps(v, sort_keys=True)) for k, v in config.items() if not k.startswith("lora_") and k not in skip}


def lora_options(adapters: list[tuple[str, Stage2]]) -> list[str]:
    """vLLM's options that register each adapter under its name (the `model` a request names), with
    the rank limit the largest needs and room for all of them in one batch."""
    options = ["--enable-lora", "--lora-modules", *(f"{name}={stage2.adapter}" for name, stage2 in adapters)]
    options += ["--max-lora-rank", str(max(stage2.max_lora_rank for _, stage2 in adapters))]
    return options + (["--max-loras", str(len(adapters))] if len(adapters) > 1 else [])
