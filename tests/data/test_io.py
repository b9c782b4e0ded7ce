import subprocess
import sys

import pytest

from lyrics.atomic import atomic_write_json, atomic_write_text
from lyrics.data.io import stable_seed


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and [p.name for p in path.parent.iterdir()] == ["out.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_stable_seed_is_the_same_in_another_process():
    here = stable_seed(3, "vqa", 42)
    there = subprocess.run([sys.executable, "-c", "from lyrics.data.io import stable_seed; print(stable_seed(3, 'vqa', 42))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert str(here) == there and stable_seed(3, "vqa", 43) != here
