"""The tiny checkpoint the vLLM tests share: built once per session (stage 2 and its merge)."""

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
