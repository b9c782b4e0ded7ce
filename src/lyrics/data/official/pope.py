"""POPE object-hallucination questions.

`coco_pope_random.json`, `coco_pope_popular.json`, `coco_pope_adversarial.json` are JSON lines::

    {"question_id": int, "image": "COCO_val2014_000000000042.jpg",
     "text": "Is there a dog in the image?", "label": "yes|no"}

image: `image_root / <image>` (image_root is the COCO val2014 folder).
"""

from __future__ import annotations

import os
from pathlib import Path

from lyrics.data.official.common import FormatError, find_files, get, read_jsonl, resolve
from lyrics.data.official.samples import PopeSample

POPE_VARIANTS = ("random", "popular", "adversarial")


def read_pope(
    path: str | os.PathLike, image_root: str | os.PathLike | None = None, variant: str | None = None
) -> list[PopeSample]:
    """Read one POPE file, or from a folder the `variant` file (all three when `variant` is None).

    `meta["variant"]` says which sampling a question comes from.
    """
    path = Path(path)
    if path.is_dir():
        variants = POPE_VARIANTS if variant is None else (variant,)
        found = find_files(path, {v: [f"coco_pope_{v}.json"] for v in variants}, "POPE")
        return [s for v in variants for s in read_pope(found[v], image_root, v)]
    if variant is None:
        variant = next((v for v in POPE_VARIANTS if path.stem.endswith(v)), path.stem)
    samples = []
    for number, row in read_jsonl(path):
        where = f"line {number}"
        label = get(row, "label", str, path, where).strip().lower()
        if label not in ("yes", "no"):
            raise FormatError(path, f"must be 'yes' or 'no', got {row['label']!r}", where, "label")
        samples.append(
            PopeSample(
                question_id=get(row, "question_id", (int, str), path, where),
                image_path=resolve(image_root, get(row, "image", str, path, where)),
                question=get(row, "text", str, path, where),
                label=label,
                meta={"variant": variant},
            )
        )
    return samples
