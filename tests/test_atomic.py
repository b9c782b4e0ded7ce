"""The one atomic-write helper: readers see the old output or the whole new one, never a part."""

import pytest

from lyrics.atomic import atomic_directory, atomic_path, atomic_write_json


def test_failed_file_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == '{\n "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_directory_is_swapped_whole(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_directory(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("crash")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    with atomic_directory(target) as tmp:
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary or old copy left
    assert oct(target.stat().st_mode & 0o777) != oct(0o700)  # ordinary permissions, not mkdtemp's
