"""Stand-ins for Lyrics' frozen pretrained parts, trained on the toy world in seconds.

No pretrained weights can be downloaded here, so the quickstart trains small versions of them on
the toy world and saves them in transformers format; everything downstream loads them through the
same `from_pretrained` calls as the real checkpoints:

=====================  =========================  ================================================
paper part             stand-in                   loaded with
=====================  =========================  ================================================
CLIP ViT-L/14          `train_clip_standin`       `CLIPModel` / `CLIPVisionModel` / `AutoProcessor`
Vicuna-13B             `train_lm_standin`         `AutoModelForCausalLM` / `AutoTokenizer`
BERT-base vocabulary   `build_mqformer_tokenizer` `AutoTokenizer` (then `mqformer_token_ids`)
=====================  =========================  ================================================

`train_standins(world_dir, out_dir)` runs all three into `out_dir/{clip,lm,mqformer_tokenizer}`;
a stand-in whose directory already holds a finished run with the same configuration is reused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lyrics.toyworld.standins.clip import ClipStandinConfig, evaluate_retrieval, train_clip_standin
from lyrics.toyworld.standins.corpus import StandinData, document_text, lm_documents, world_identity
from lyrics.toyworld.standins.lm import LMStandinConfig, evaluate_lm, train_lm_standin
from lyrics.toyworld.standins.training import LOG_NAME, save_atomically
from lyrics.toyworld.standins.vocab import train_mqformer_tokenizer

__all__ = [
    "ClipStandinConfig",
    "LMStandinConfig",
    "StandinPaths",
    "build_mqformer_tokenizer",
    "evaluate_lm",
    "evaluate_retrieval",
    "train_clip_standin",
    "train_lm_standin",
    "train_standins",
]


MQFORMER_VOCAB_SIZE = 1536


def build_mqformer_tokenizer(
    world_dir: str | Path, out_dir: str | Path, vocab_size: int = MQFORMER_VOCAB_SIZE, data: StandinData | None = None
) -> dict[str, int]:
    """Train the MQ-Former's WordPiece vocabulary on toy text, save it, and return the
    `MQFormerConfig` fields that depend on it (`lyrics.tokenization.mqformer_token_ids`)."""
    import numpy as np

    from lyrics.tokenization import mqformer_token_ids

    data = data or StandinData.load(world_dir)
    tokenizer = train_mqformer_tokenizer(map(document_text, lm_documents(data.train, np.random.default_rng(0))), vocab_size=vocab_size)
    ids = mqformer_token_ids(tokenizer)

    def write(directory: Path) -> None:
        tokenizer.save_pretrained(str(directory))
        record = {"token_ids": ids, "world": data.world, "vocab_size": vocab_size}
        (directory / "mqformer_token_ids.json").write_text(json.dumps(record, indent=1), encoding="utf-8")

    save_atomically(out_dir, write)
    return ids


@dataclass
class StandinPaths:
    """Where the stand-ins were saved, and what their runs reported."""

    clip: Path
    lm: Path
    mqformer_tokenizer: Path
    mqformer_token_ids: dict[str, int]
    logs: dict[str, dict[str, Any]] = field(default_factory=dict)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _finished(directory: Path, config: dict[str, Any], world: dict[str, Any]) -> dict[str, Any] | None:
    """The saved log of a finished run with exactly this configuration on this world, else None.
    The configuration is compared as saved (JSON): a tuple field reads back as a list."""
    log = _read_json(directory / LOG_NAME)
    config = json.loads(json.dumps(config))
    return log if log is not None and log.get("config") == config and log.get("world") == world else None


def train_standins(
    world_dir: str | Path,
    out_dir: str | Path,
    fast: bool = False,
    seed: int = 0,
    clip: ClipStandinConfig | None = None,
    lm: LMStandinConfig | None = None,
) -> StandinPaths:
    """Train (or reuse) every stand-in for the world at `world_dir` into `out_dir`.

    Args:
        fast: the `--fast` budgets (`ClipStandinConfig.fast()`, `LMStandinConfig.fast()`).
        seed: seeds both trainers (ignored for a config passed explicitly).
        clip, lm: explicit configurations, overriding `fast` and `seed`.
    """
    out = Path(out_dir)
    clip = clip or (ClipStandinConfig.fast(seed=seed) if fast else ClipStandinConfig(seed=seed))
    lm = lm or (LMStandinConfig.fast(seed=seed) if fast else LMStandinConfig(seed=seed))
    data: StandinData | None = None
    logs: dict[str, dict[str, Any]] = {}

    def get_data() -> StandinData:
        nonlocal data
        data = data or StandinData.load(world_dir)
        return data

    world = world_identity(world_dir)
    for name, config, trainer in (("clip", clip, train_clip_standin), ("lm", lm, train_lm_standin)):
        done = _finished(out / name, asdict(config), world)
        logs[name] = done if done is not None else trainer(world_dir, out / name, config, data=get_data()).to_dict()

    tok_dir = out / "mqformer_tokenizer"
    saved = _read_json(tok_dir / "mqformer_token_ids.json")
    if saved is not None and saved.get("world") == world and saved.get("vocab_size") == MQFORMER_VOCAB_SIZE:
        ids = saved["token_ids"]
    else:
        ids = build_mqformer_tokenizer(world_dir, tok_dir, data=get_data())
    return StandinPaths(clip=out / "clip", lm=out / "lm", mqformer_tokenizer=tok_dir, mqformer_token_ids=ids, logs=logs)
