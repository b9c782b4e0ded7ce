"""Stable per-sample seeds shared by the data modules (atomic writes: `lyrics.atomic`).

Stable seeds: Python's `hash()` is salted per process, so per-sample randomness is derived from
SHA-256 of the seed and the sample's key instead; the same (seed, key) gives the same stream in every
process, worker and rank.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any


def stable_seed(*parts: Any) -> int:
    """A 63-bit integer from `parts` that is identical in every process (unlike `hash`)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def stable_rng(*parts: Any) -> random.Random:
    """A `random.Random` seeded by `stable_seed(*parts)`."""
    return random.Random(stable_seed(*parts))
