"""POPE questions for a toy split, with the three negative samplings of the POPE benchmark.

POPE (Li et al. 2023; paper appendix D) polls "Is there a <object> in the image?" for objects that
are present (label "yes") and absent (label "no"). We follow the reference builder's procedure:

* images with at least `SAMPLE_NUM` (3) distinct objects are used; an image's objects are its
  distinct tags in draw order;
* per image, each of its first 3 objects gives one "yes" question, immediately followed by one "no"
  question, so yes and no are exactly balanced;
* a negative is never present in the image and never asked twice for the same image;
* **random**: a uniformly random object among those that occur in the split's POPE images;
* **popular**: the most frequent object of the split (number of images containing it, ties by
  name) that is still allowed;
* **adversarial**: the object that co-occurs most often (same image) with the positive just asked
  (ties by name) that is still allowed; when every co-occurring object is excluded, a random one.
* In a very small split every object of the POPE images may be present or asked already; then the
  negative is drawn from `pool` (every tag the split may name) instead of looping forever as the
  reference builder would.

Statistics (frequency, co-occurrence) are computed over the split's POPE images, as the reference
builder computes them over its sampled images.

**paraphrase** (not a POPE sampling; the toy world's own check) asks the adversarial sampling's
questions again, each in one of `PARAPHRASES` in turn: phrasings that no training record uses
(tested), so that a model answering the wording rather than the image shows as a gap between the two.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lyrics.toyworld.language import article

SAMPLE_NUM = 3
SAMPLINGS = ("random", "popular", "adversarial")
# Held-out phrasings of "Is there {a tag} in the image?" ({a} is the tag with its article).
PARAPHRASES = (
    "Does the image contain {a}?",
    "Can you see {a} in this picture?",
    "Is {a} present in the image?",
    "Do you spot {a} anywhere here?",
    "Would you say the picture shows {a}?",
)


@dataclass(frozen=True)
class PopeQuestion:
    image_index: int  # position in the list given to `build_pope`
    tag: str
    label: str  # "yes" | "no"

    @property
    def text(self) -> str:
        return f"Is there {article(self.tag)} in the image?"

    def paraphrase(self, k: int) -> str:
        """The question in held-out phrasing `k` (modulo the number of phrasings)."""
        return PARAPHRASES[k % len(PARAPHRASES)].format(a=article(self.tag))


def object_statistics(images: Sequence[Sequence[str]]) -> tuple[Counter, dict[str, Counter]]:
    """Per-object image frequency and pairwise co-occurrence counts over `images` (lists of tags)."""
    frequency: Counter = Counter()
    cooccur: dict[str, Counter] = defaultdict(Counter)
    for tags in images:
        distinct = list(dict.fromkeys(tags))
        frequency.update(distinct)
        for a in distinct:
            for b in distinct:
                if a != b:
                    cooccur[a][b] += 1
    return frequency, cooccur


def pope_images(images: Sequence[Sequence[str]]) -> list[int]:
    """Indices of the images POPE uses (at least SAMPLE_NUM distinct objects)."""
    return [i for i, tags in enumerate(images) if len(dict.fromkeys(tags)) >= SAMPLE_NUM]


def build_pope(
    images: Sequence[Sequence[str]], sampling: str, rng: np.random.Generator, pool: Sequence[str] = ()
) -> list[PopeQuestion]:
    """POPE questions for every usable image of a split; `images[i]` = the tags of image i in draw order.

    `pool`: fallback negatives for tiny splits (see module docstring).
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"POPE sampling must be one of {SAMPLINGS}, got {sampling!r}")
    used = pope_images(images)
    frequency, cooccur = object_statistics([images[i] for i in used])
    vocabulary = sorted(frequency)
    by_popularity = sorted(vocabulary, key=lambda t: (-frequency[t], t))
    questions: list[PopeQuestion] = []
    for i in used:
        present = list(dict.fromkeys(images[i]))
        asked = set()
        for positive in present[:SAMPLE_NUM]:
            asked.add(positive)
            questions.append(PopeQuestion(i, positive, "yes"))

            def allowed(tag: str) -> bool:
                return tag not in asked and tag not in present

            negative = None
            if sampling == "popular":
                negative = next((t for t in by_popularity if allowed(t)), None)
            elif sampling == "adversarial":
                ranked = sorted(cooccur[positive].items(), key=lambda kv: (-kv[1], kv[0]))
                negative = next((t for t, _ in ranked if allowed(t)), None)
            if negative is None:  # random sampling, and the reference builder's fallback
                candidates = [t for t in vocabulary if allowed(t)] or [t for t in sorted(pool) if allowed(t)]
                if not candidates:
                    raise ValueError(f"POPE image {i}: no absent object left to ask about")
                negative = candidates[int(rng.integers(len(candidates)))]
            asked.add(negative)
            questions.append(PopeQuestion(i, negative, "no"))
    return questions
