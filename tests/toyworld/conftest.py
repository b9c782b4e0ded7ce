"""A tiny toy world shared by the toy-world tests (generated once per session, ~1 s)."""

import pytest
import torch

from lyrics.toyworld.world import generate_world

TINY_SIZES = {"train": 36, "val": 14, "test": 20, "zeroshot": 16}


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("toyworld") / "world"
    manifest = generate_world(root, seed=7, sizes=TINY_SIZES)
    return root, manifest


@pytest.fixture
def one_thread():
    """The stand-in tests train tiny models; one thread avoids oversubscribing a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
