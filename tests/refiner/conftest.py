"""Session fixtures: tiny random refiner checkpoints, built once and saved like real ones."""

from __future__ import annotations

import pytest

from . import tinymodels


@pytest.fixture(scope="session")
def gdino_dir(tmp_path_factory):
    return tinymodels.save_grounding_dino(tmp_path_factory.mktemp("grounding-dino-tiny"))


@pytest.fixture(scope="session")
def sam_dir(tmp_path_factory):
    return tinymodels.save_sam(tmp_path_factory.mktemp("sam-vit-tiny"), hq=False)


@pytest.fixture(scope="session")
def samhq_dir(tmp_path_factory):
    return tinymodels.save_sam(tmp_path_factory.mktemp("sam-hq-vit-tiny"), hq=True)


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    return tinymodels.save_clip(tmp_path_factory.mktemp("clip-tiny"))
