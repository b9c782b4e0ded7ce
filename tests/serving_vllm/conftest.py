"""The tiny checkpoints the vLLM tests share: built once per session (stage 2 and its merge), one with
SmolLM2's tokenizer (ChatML), one with a SentencePiece tokenizer in Vicuna's format."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """(stage-2 folder with its LoRA adapter, `lyrics merge` of it): `checkpoint.build`."""
    from lyrics.toyworld.standins.smollm import MissingModelError

    from serving_vllm.checkpoint import build

    try:
        return build(tmp_path_factory.mktemp("tiny-vllm"))
    except MissingModelError as exc:
        pytest.skip(f"the tiny checkpoint uses SmolLM2's tokenizer: {exc}")


@pytest.fixture(scope="session")
def tiny_sentencepiece_checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """As `tiny_checkpoints`, with a LLaMA SentencePiece tokenizer and Vicuna's format (the paper's LLM).
    Seed 3: its random weights answer the 53 test chats in 42 different ways (seed 2: 11), so equal
    answers show that both servers read the image and the question."""
    from serving_vllm.checkpoint import build

    return build(tmp_path_factory.mktemp("tiny-vllm-spm"), seed=3, tokenizer="sentencepiece")
