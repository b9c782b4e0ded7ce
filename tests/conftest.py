import atexit
import os
import shutil
import tempfile

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite's own cache of converted LLMs (standins/smollm.py), shared by its quickstart subprocesses,
# never the user's ~/.cache.
_cache = tempfile.mkdtemp(prefix="lyrics-test-cache-")
atexit.register(shutil.rmtree, _cache, True)
os.environ["LYRICS_CACHE"] = _cache
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
