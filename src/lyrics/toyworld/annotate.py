"""Everything the toy world says about one image, gathered in one record.

`annotate(scene, ...)` runs the language and question generators of `lyrics.toyworld.language` /
`questions` on a drawn scene with the image's own random stream, so an image's annotations depend
only on `(seed, split, index)`, never on the other images or on the split sizes. The official-format
writers (`lyrics.toyworld.layouts`) only re-arrange these records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lyrics.toyworld import spec
from lyrics.toyworld.language import Reference, captions, unique_references
from lyrics.toyworld.questions import QA, Dialogue, MultipleChoice, YesNoPair, dialogues, mme_pairs, multiple_choice, vqa_questions
from lyrics.refiner import rle
from lyrics.toyworld.scenes import SPLIT_CODES, Scene, SceneObject

# Expressions kept per referred object (shortest first), like RefCOCO's ~3 sentences per ref.
MAX_EXPRESSIONS = 3


def split_subtype(split: str) -> str:
    """VQAv2 `data_subtype` of a split; it names the image folder and the file prefix."""
    return f"toy{split}"


def image_file_name(split: str, image_id: int) -> str:
    """The one file of an image, relative to the split's image folder (VQAv2 / COCO 2014 naming)."""
    subtype = split_subtype(split)
    return f"COCO_{subtype}_{image_id:012d}.jpg"


def split_tag_pool(split: str) -> list[str]:
    """Tags a split may name in text: every tag, minus the zero-shot pairs outside the zero-shot split."""
    held_out = {spec.tag(c, s) for c, s in spec.ZERO_SHOT_PAIRS}
    return [t for t in spec.all_tags() if split == "zeroshot" or t not in held_out]


@dataclass
class ImageRecord:
    """One image and all its annotations (in memory; masks as COCO RLE)."""

    image_id: int
    split: str
    index: int
    width: int
    height: int
    objects: list[SceneObject]
    masks: list[dict]
    captions: list[str]
    vqa: list[QA]
    refs: list[tuple[int, list[Reference]]]
    multiple_choice: list[MultipleChoice]
    dialogues: list[Dialogue]
    mme: list[YesNoPair]
    jpeg: bytes = field(default=b"", repr=False)

    @property
    def file_name(self) -> str:
        return image_file_name(self.split, self.image_id)

    @property
    def tags(self) -> list[str]:
        return [o.tag for o in self.objects]


def annotate(scene: Scene, image_id: int, split: str, index: int, seed: int) -> ImageRecord:
    """Annotate one drawn scene; the random stream is the image's own (independent of the drawing's)."""
    rng = np.random.default_rng([int(seed), SPLIT_CODES[split], int(index), 1])
    pool = split_tag_pool(split)
    objects = scene.objects
    refs = []
    for k in range(len(objects)):
        expressions = unique_references(objects, k)[:MAX_EXPRESSIONS]
        if expressions:
            refs.append((k, expressions))
    return ImageRecord(
        image_id=image_id,
        split=split,
        index=index,
        width=scene.width,
        height=scene.height,
        objects=list(objects),
        masks=[rle.encode(scene.mask(k)) for k in range(len(objects))],
        captions=captions(objects, rng),
        vqa=vqa_questions(objects, rng, pool),
        refs=refs,
        multiple_choice=multiple_choice(objects, rng),
        dialogues=dialogues(objects, rng),
        mme=mme_pairs(objects, rng, pool),
        jpeg=scene.jpeg_bytes(),
    )
