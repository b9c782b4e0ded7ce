"""Shared fixtures: one tiny checkpoint (with a live toy refiner) and one loaded pipeline per session."""

from __future__ import annotations

import os

import pytest

from inference.tinyckpt import build_checkpoint, scene

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("inference"))


@pytest.fixture(scope="session")
def pipe(checkpoint):
    from lyrics.inference import LyricsPipeline

    return LyricsPipeline.from_pretrained(checkpoint)


@pytest.fixture(scope="session")
def scenes():
    return [scene(i) for i in range(6)]
