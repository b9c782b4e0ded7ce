"""Captioning: CIDEr-D (COCO, NoCaps, Flickr30K; paper Table 1) through pycocoevalcap.

We call the COCO caption toolkit itself rather than re-implement it: captions are tokenised with its
`PTBTokenizer` (Stanford CoreNLP's PTB tokenizer, run with Java; lower-cases and drops punctuation)
and scored with its `Cider` class, which is CIDEr-D (n = 1..4, Gaussian length penalty sigma = 6,
clipped counts, x10). The document frequencies behind CIDEr's IDF weights are computed over the
reference sets of ALL images passed in one call, so the score of an image depends on the rest of
the split: always score a whole split at once, never in batches, or the numbers are not comparable.
Papers report 100 x the returned corpus score (e.g. Lyrics' 121.1 on COCO is 1.211 here).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class JavaNotFoundError(RuntimeError):
    """pycocoevalcap's PTBTokenizer runs `java`; raised when no Java runtime is on PATH."""


@dataclass
class CiderResult:
    """Corpus CIDEr-D (pycocoevalcap scale: mean over images, x100 for the usual reporting) and the
    per-image scores."""

    score: float
    per_image: dict[Any, float] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.per_image)


def _require_java() -> None:
    if shutil.which("java") is None:
        raise JavaNotFoundError(
            "CIDEr needs a Java runtime for pycocoevalcap's PTBTokenizer, and `java` is not on PATH; "
            "install one (e.g. `apt-get install -y default-jre-headless`) and retry"
        )


def cider(references: Mapping[Any, Sequence[str]], predictions: Mapping[Any, str]) -> CiderResult:
    """CIDEr-D of one caption per image against its references, over a whole split.

    Args:
        references: image_id -> the reference captions (at least one each).
        predictions: image_id -> the generated caption; must cover exactly the ids of `references`.

    Returns:
        a `CiderResult`.
    """
    if not references:
        raise ValueError("cider needs at least one image")
    missing = [k for k in references if k not in predictions]
    extra = [k for k in predictions if k not in references]
    if missing or extra:
        raise ValueError(
            f"cider: predictions must cover exactly the referenced images "
            f"({len(missing)} missing, e.g. {missing[:5]}; {len(extra)} unknown, e.g. {extra[:5]})"
        )
    for image_id, refs in references.items():
        if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"cider: references for image {image_id!r} must be a non-empty list of strings")
        if not isinstance(predictions[image_id], str):
            raise ValueError(f"cider: the prediction for image {image_id!r} must be a string")
    _require_java()

    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in refs] for k, refs in references.items()})
    res = tokenizer.tokenize({k: [{"caption": predictions[k]}] for k in references})
    # A failing Java run returns fewer lines than it was given, which would silently drop captions.
    if len(res) != len(references) or any(len(gts.get(k, ())) != len(refs) for k, refs in references.items()):
        raise RuntimeError("pycocoevalcap's PTBTokenizer returned fewer captions than it was given")
    score, scores = Cider().compute_score(gts, res)
    return CiderResult(score=float(score), per_image={k: float(s) for k, s in zip(gts.keys(), scores)})
