"""Initialise Lyrics from the BLIP-2 checkpoints people already have (paper section 3.1: "MQ-Former
continues training on the BLIP-2 first-stage pre-training breakpoints").

Readable sources, detected from the files:

* a transformers checkpoint directory: `Blip2Model`, `Blip2ForConditionalGeneration`,
  `Blip2ForImageTextRetrieval`, `Blip2QFormerModel`, `InstructBlip*` (safetensors or
  `pytorch_model.bin`, sharded or not);
* a LAVIS state-dict file (`Qformer.bert.*`, `query_tokens`, `ln_vision`, ...), bare or under
  `"model"` as LAVIS saves it;
* the authors' released code (Fengshenbang `modeling_lyrics.py`): a 96-query `query_tokens` whose last
  64 rows are grounding queries, and `detection_crossattention` layers.

Every source is first renamed into one canonical layout (`mqformer.<MQFormerModel key>` plus the
BLIP-2 heads `vision_proj`, `text_proj`, `itm_head`, `temp`, `image_layernorm` and
`language_projection`), then copied into the target with a `LoadReport`.

What is not in a BLIP-2 checkpoint starts fresh and is reported as newly initialised:
grounding cross-attention (Xavier, as the paper says), grounding queries (N(0, 0.02) like BLIP-2's own
queries, or a tiled copy of the pretrained visual queries with `grounding_query_init="copy"`), the
local-feature LayerNorm, the rows of the added special tokens, and (for transformers checkpoints,
which have no Q-Former text side) the text embeddings and LM head.

Files are read with safetensors or `torch.load(weights_only=True)`; nothing is unpickled.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

# Renaming rules, applied in order; the first matching rule wins. `None` drops the key silently
# (buffers and duplicates of tied weights), a key matching no rule is reported as unused.
_Rule = tuple[str, str | None]

_LAVIS_RULES: list[_Rule] = [
    (r"^Qformer\.bert\.embeddings\.position_ids$", None),
    (r"^Qformer\.bert\.embeddings\.LayerNorm\.", "mqformer.embeddings.layernorm."),
    (r"^Qformer\.bert\.embeddings\.", "mqformer.embeddings."),
    (r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.", r"mqformer.encoder.layer.\1.\2.attention."),
    (r"^Qformer\.bert\.encoder\.", "mqformer.encoder."),
    (r"^Qformer\.cls\.predictions\.decoder\.", None),  # tied to the word embeddings
    (r"^Qformer\.cls\.predictions\.transform\.", "mqformer.lm_head.transform."),
    (r"^Qformer\.cls\.predictions\.bias$", "mqformer.lm_head.bias"),
    (r"^query_tokens$", "mqformer.query_tokens"),
    (r"^ln_vision\.", "image_layernorm."),
    (r"^(vision_proj|text_proj|itm_head)\.", r"\1."),
    (r"^temp$", "temp"),
    (r"^(llm_proj|opt_proj|t5_proj)\.", "language_projection."),
]

_TRANSFORMERS_RULES: list[_Rule] = [
    (r"^qformer\.embeddings\.position_ids$", None),
    (r"^(?:qformer\.)?layernorm\.", "mqformer.embeddings.layernorm."),  # Blip2QFormerModel
    (r"^qformer\.embeddings\.", "mqformer.embeddings."),  # InstructBLIP
    (r"^embeddings\.(word|position)_embeddings\.", r"mqformer.embeddings.\1_embeddings."),  # ImageTextRetrieval
    (r"^embeddings\.position_ids$", None),
    (r"^(?:qformer\.)?encoder\.", "mqformer.encoder."),
    (r"^query_tokens$", "mqformer.query_tokens"),
    (r"^vision_model\.post_layernorm\.", "image_layernorm."),
    (r"^vision_projection\.", "vision_proj."),
    (r"^text_projection\.", "text_proj."),
    (r"^itm_head\.", "itm_head."),
    (r"^language_projection\.", "language_projection."),
]

# The released code (Fengshenbang-LM PR #449) derives from transformers' BLIP-2 code: its stage-2
# model keeps `qformer.embeddings.LayerNorm`, `qformer.encoder.*`; its stage-1 model nests them under
# `qformer.bert.` with the LM head under `qformer.cls.`.
_RELEASED_RULES: list[_Rule] = [
    (r"^qformer\.(?:bert\.)?embeddings\.position_ids$", None),
    (r"^qformer\.(?:bert\.)?embeddings\.LayerNorm\.", "mqformer.embeddings.layernorm."),
    (r"^qformer\.(?:bert\.)?embeddings\.", "mqformer.embeddings."),
    (r"^qformer\.(?:bert\.)?encoder\.layer\.(\d+)\.detection_crossattention\.", r"mqformer.encoder.layer.\1.grounding_crossattention."),
    (r"^qformer\.(?:bert\.)?encoder\.", "mqformer.encoder."),
    (r"^qformer\.cls\.predictions\.decoder\.", None),
    (r"^qformer\.cls\.predictions\.transform\.", "mqformer.lm_head.transform."),
    (r"^qformer\.cls\.predictions\.bias$", "mqformer.lm_head.bias"),
    (r"^query_tokens$", "released_query_tokens"),  # split below
    (r"^vision_model\.post_layernorm\.", "image_layernorm."),
    (r"^(vision_proj|text_proj|itm_head)\.", r"\1."),
    (r"^temp$", "temp"),
    (r"^language_projection\.", "language_projection."),
]

FORMATS = {"lavis": _LAVIS_RULES, "transformers": _TRANSFORMERS_RULES, "released": _RELEASED_RULES}


@dataclass
class LoadReport:
    """What a checkpoint import did, key by key (target names)."""

    source: str
    format: str
    loaded: list[str] = field(default_factory=list)
    newly_initialized: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    resized: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "format": self.format,
            "loaded": self.loaded,
            "newly_initialized": self.newly_initialized,
            "unused": self.unused,
            "resized": self.resized,
        }

    def summary(self) -> str:
        lines = [
            f"loaded {len(self.loaded)} tensors from {self.source} ({self.format} layout)",
            f"newly initialised: {len(self.newly_initialized)}",
            f"unused in the checkpoint: {len(self.unused)}",
        ]
        lines += [f"  resized {key}: {how}" for key, how in self.resized.items()]
        return "\n".join(lines)


class CheckpointError(ValueError):
    """A checkpoint that cannot initialise the requested model; the message names the file and key."""


# --------------------------------------------------------------------------------------------------
# Reading files


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling refusal or corrupt file
        raise CheckpointError(f"{path}: cannot be read as a weights-only torch checkpoint ({exc})") from exc
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # LAVIS saves {"model": state_dict, "optimizer": ..., ...}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: is not a state dict of tensors")
    return obj


def _load_directory(path: Path) -> dict[str, torch.Tensor]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(_load_file(path / shard))
            return state
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return _load_file(path / name)
    raise CheckpointError(f"{path}: no model.safetensors, pytorch_model.bin or shard index in this directory")


def _hub_snapshot(repo_id: str) -> Path:
    """Download the weights and config of a hub repository (e.g. "Salesforce/blip2-opt-2.7b")."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.bin"]))
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, auth: all mean "not available"
        raise CheckpointError(f"{repo_id}: not a local path and could not be fetched from the hub ({type(exc).__name__}: {exc})") from exc


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Read a checkpoint file or transformers directory (or a hub id such as
    "Salesforce/blip2-opt-2.7b"); returns the tensors and the config (if any)."""
    if not Path(path).exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", str(path)):
        path = _hub_snapshot(str(path))
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        config_file = path / "config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else None
        return _load_directory(path), config
    return _load_file(path), None


def detect_format(state: dict[str, torch.Tensor], source: str) -> str:
    keys = list(state)
    if any("detection_crossattention" in k for k in keys):
        return "released"
    if any(k.startswith("Qformer.") for k in keys):
        return "lavis"
    if any(re.match(r"^(qformer\.)?encoder\.layer\.\d+\.attention\.attention\.", k) for k in keys):
        return "transformers"
    sample = ", ".join(keys[:5]) or "no tensors"
    raise CheckpointError(
        f"{source}: not a BLIP-2 checkpoint: no Q-Former weights found "
        f"(expected `Qformer.bert.encoder.*` (LAVIS) or `qformer.encoder.*` (transformers); first keys: {sample})"
    )


def canonicalize(
    state: dict[str, torch.Tensor], fmt: str, num_query_tokens: int | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a checkpoint's keys into the canonical layout; returns (tensors, unused source keys)."""
    rules = [(re.compile(pattern), repl) for pattern, repl in FORMATS[fmt]]
    out: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key, tensor in state.items():
        for pattern, repl in rules:
            if pattern.search(key):
                if repl is not None:
                    out[pattern.sub(repl, key)] = tensor
                break
        else:
            unused.append(key)
    if "released_query_tokens" in out:
        # One (1, 32 + 64, H) parameter in the released code: visual queries first.
        tokens = out.pop("released_query_tokens")
        split = 32 if num_query_tokens is None else num_query_tokens
        out["mqformer.query_tokens"] = tokens[:, :split]
        if tokens.shape[1] > split:
            out["mqformer.grounding_query_tokens"] = tokens[:, split:]
    return out, unused


def load_canonical(path: str | Path, num_query_tokens: int | None = None) -> tuple[dict[str, torch.Tensor], list[str], str]:
    state, _ = read_state_dict(path)
    fmt = detect_format(state, str(path))
    canonical, unused = canonicalize(state, fmt, num_query_tokens)
    return canonical, unused, fmt


# --------------------------------------------------------------------------------------------------
# Copying into a module

# Vocabulary rows may grow (the added [DEC]/[BOS]/[MLM] and spatial markup tokens): the checkpoint's
# rows are copied and the new rows keep their fresh initialisation. LAVIS does the same when it adds
# [DEC] (`resize_token_embeddings`).
_GROWABLE = ("mqformer.embeddings.word_embeddings.weight", "mqformer.lm_head.bias")


def copy_into(
    module: nn.Module,
    canonical: dict[str, torch.Tensor],
    prefix: str,
    report: LoadReport,
) -> None:
    """Copy every canonical tensor whose name starts with `prefix` into `module` (names relative to the
    prefix). Shape mismatches raise `CheckpointError` naming the key; target tensors absent from the
    checkpoint are reported as newly initialised."""
    targets = dict(module.state_dict())
    seen: set[str] = set()
    with torch.no_grad():
        for name, tensor in canonical.items():
            if not name.startswith(prefix):
                continue
            local = name[len(prefix) :]
            if local not in targets:
                report.unused.append(name)
                continue
            target = targets[local]
            if tensor.shape != target.shape:
                grow = name in _GROWABLE and tensor.shape[0] < target.shape[0] and tensor.shape[1:] == target.shape[1:]
                if not grow:
                    raise CheckpointError(
                        f"{report.source}: shape mismatch for {name}: checkpoint has {tuple(tensor.shape)}, "
                        f"the model expects {tuple(target.shape)}"
                    )
                target[: tensor.shape[0]].copy_(tensor.to(target.dtype))
                report.resized[name] = f"{tensor.shape[0]} -> {target.shape[0]} rows (new rows freshly initialised)"
            else:
                target.copy_(tensor.to(target.dtype))
            seen.add(local)
            report.loaded.append(name)
    report.newly_initialized.extend(prefix + k for k in targets if k not in seen)


def load_mqformer_from_blip2(model: nn.Module, path: str | Path) -> LoadReport:
    """Initialise an `MQFormerModel` in place from a BLIP-2 / InstructBLIP / LAVIS / released checkpoint."""
    canonical, unused, fmt = load_canonical(path, model.config.num_query_tokens)
    report = LoadReport(source=str(path), format=fmt, unused=list(unused))
    copy_into(model, canonical, "mqformer.", report)
    # Keys for other parts of a full model (ITC/ITM heads, projection, ln_vision) are not used here.
    report.unused.extend(k for k in canonical if not k.startswith("mqformer."))
    grounding = getattr(model, "grounding_query_tokens", None)
    if (
        grounding is not None
        and model.config.grounding_query_init == "copy"
        and "mqformer.grounding_query_tokens" not in canonical
    ):
        visual = model.query_tokens.detach()
        reps = -(-grounding.shape[1] // visual.shape[1])
        with torch.no_grad():
            grounding.copy_(visual.repeat(1, reps, 1)[:, : grounding.shape[1]])
    return report
