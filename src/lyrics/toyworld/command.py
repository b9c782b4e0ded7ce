"""What `lyrics toyworld` does: generate a toy world (and optionally its stand-ins) and summarise it."""

from __future__ import annotations

import time
from pathlib import Path

from lyrics.toyworld.world import FAST_SIZES, WorldSizes, generate_world


def run_toyworld(
    out: Path,
    seed: int = 0,
    sizes: dict[str, int | None] | None = None,
    fast: bool = False,
    standins: Path | None = None,
    workers: int = 1,
) -> list[str]:
    """Generate the world into `out` (a no-op if it is already there) and, with `standins`, train
    the CLIP stand-in and the MQ-Former tokenizer into that directory (`train_standins`; the LLM is
    a pretrained checkpoint, not trained here). Returns the summary lines to print."""
    base = FAST_SIZES if fast else WorldSizes()
    chosen = {k: v for k, v in (sizes or {}).items() if v is not None}
    start = time.perf_counter()
    manifest = generate_world(out, seed=seed, sizes={**base.as_dict(), **chosen}, workers=workers)
    lines = [f"toy world {out} (seed {manifest['seed']}) ready in {time.perf_counter() - start:.1f} s"]
    for split, info in manifest["splits"].items():
        lines.append(f"  {split:9s} {info['num_images']:5d} images  ({info['image_dir']})")
    lines.append(f"  {len(manifest['files'])} annotation files, listed in {out / 'world.json'}")
    if standins is not None:
        from lyrics.toyworld.standins import train_standins

        start = time.perf_counter()
        paths = train_standins(out, standins, fast=fast, seed=seed)
        lines.append(f"stand-ins in {standins} ({time.perf_counter() - start:.1f} s)")
        clip = paths.logs["clip"]
        lines.append(f"  clip: {paths.clip}, final loss {clip['final_loss']:.3f} after {len(clip['loss'])} steps ({clip['seconds']:.1f} s)")
        lines.append(f"  mqformer tokenizer: {paths.mqformer_tokenizer} (vocab {paths.mqformer_token_ids['vocab_size']})")
    return lines
