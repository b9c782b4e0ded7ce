"""Small file helpers shared by the data modules: atomic writes and stable per-sample seeds.

Atomic: long jobs (converters, `lyrics convert`) must never leave a half-written output behind, so
every write goes to a temporary file in the same directory and is moved into place with
`os.replace` (atomic on POSIX and Windows when source and target share a filesystem).

Stable seeds: Python's `hash()` is salted per process, so per-sample randomness is derived from
SHA-256 of the seed and the sample's key instead; the same (seed, key) gives the same stream in every
process, worker and rank.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` (UTF-8) through a temp file + `os.replace`; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 1) -> Path:
    return atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=indent) + "\n")


def stable_seed(*parts: Any) -> int:
    """A 63-bit integer from `parts` that is identical in every process (unlike `hash`)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def stable_rng(*parts: Any) -> random.Random:
    """A `random.Random` seeded by `stable_seed(*parts)`."""
    return random.Random(stable_seed(*parts))
