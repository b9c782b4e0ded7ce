"""What can truthfully be said about a toy scene: descriptions, spatial relations, referring
expressions and captions.

Every sentence is computed from the scene's ground truth (`SceneObject`s), so it is correct by
construction. The definitions below are the contract the tests re-check independently:

* Relations use the centre of each object's *visible* box. "A is left of B" means
  `cx(B) - cx(A) >= margin(A, B)`, with `margin = max(RELATION_MARGIN, half the smaller of the two
  box widths)`; "above" is the same on y with box heights (image y grows downwards). So two shapes
  side by side with a slight vertical offset are neither above nor below each other, and pairs
  closer than the margin are never asked or stated: no answer depends on a few pixels.
* A referring expression is `the [size] [colour] shape [on the left|on the right|at the top|at the
  bottom]`; without a side it names every object with those attributes, with a side it names the
  object of that kind that is clearly beyond (as for relations) every other one of its kind. An
  expression is only emitted when it names exactly one object (`resolve`).
* Absolute locations ("in the top left") use thirds of the image on each axis.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lyrics.toyworld import spec
from lyrics.toyworld.scenes import SceneObject

RELATION_MARGIN = 12.0
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
SIDES = ("on the left", "on the right", "at the top", "at the bottom")
# relation word -> (axis, sign): A rel B  <=>  sign * (coord_B - coord_A) >= margin
RELATIONS = {
    "to the left of": (0, 1.0),
    "to the right of": (0, -1.0),
    "above": (1, 1.0),
    "below": (1, -1.0),
}
OPPOSITE = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below", "below": "above"}


def article(phrase: str) -> str:
    return f"an {phrase}" if phrase[:1] in "aeiou" else f"a {phrase}"


def plural(shape: str) -> str:
    return shape + "es" if shape.endswith(("s", "x")) else shape + "s"


def count_phrase(count: int, noun: str) -> str:
    """`count_phrase(2, "red circle")` -> "two red circles"; plural applies to the last word."""
    words = noun.split()
    if count != 1:
        words[-1] = plural(words[-1])
    number = NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else str(count)
    return f"{number} {' '.join(words)}"


def describe(obj: SceneObject, size: bool = True, colour: bool = True) -> str:
    """`large red circle` (without article)."""
    parts = ([obj.size] if size else []) + ([obj.colour] if colour else []) + [obj.shape]
    return " ".join(parts)


def join_list(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def pair_margin(a: SceneObject, b: SceneObject, axis: int) -> float:
    """How far apart two centres must be on `axis` (0 = x, 1 = y) for a relation to hold."""
    extent_a = a.box[axis + 2] - a.box[axis]
    extent_b = b.box[axis + 2] - b.box[axis]
    return max(RELATION_MARGIN, 0.5 * min(extent_a, extent_b))


def holds(relation: str, a: SceneObject, b: SceneObject) -> bool:
    """Whether `a <relation> b` clearly holds (see module docstring)."""
    axis, sign = RELATIONS[relation]
    return sign * (b.box_centre[axis] - a.box_centre[axis]) >= pair_margin(a, b, axis)


def level(a: SceneObject, b: SceneObject, axis: int) -> bool:
    """Neither object is clearly beyond the other on `axis`."""
    return abs(b.box_centre[axis] - a.box_centre[axis]) < pair_margin(a, b, axis)


def clear_relations(a: SceneObject, b: SceneObject) -> list[str]:
    """Relations that clearly hold from `a` to `b` (at most one per axis), same test as `holds`."""
    return [rel for rel in RELATIONS if holds(rel, a, b)]


def location(obj: SceneObject, width: int = spec.IMAGE_SIZE, height: int = spec.IMAGE_SIZE) -> str:
    """Absolute location by thirds: "in the top left", "at the top", ..., "in the middle"."""
    cx, cy = obj.box_centre
    col = min(2, int(3 * cx / width))
    row = min(2, int(3 * cy / height))
    names = {
        (0, 0): "in the top left", (0, 1): "at the top", (0, 2): "in the top right",
        (1, 0): "on the left", (1, 1): "in the middle", (1, 2): "on the right",
        (2, 0): "in the bottom left", (2, 1): "at the bottom", (2, 2): "in the bottom right",
    }
    return names[(row, col)]


# ---------------------------------------------------------------------------------------------
# Referring expressions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """A structured referring expression: `the [size] [colour] shape [side]`."""

    shape: str
    colour: str | None = None
    size: str | None = None
    side: str | None = None

    @property
    def text(self) -> str:
        words = ["the"] + [w for w in (self.size, self.colour) if w] + [self.shape]
        return " ".join(words + ([self.side] if self.side else []))

    @property
    def noun(self) -> str:
        """The expression without article and side: what a question can put after "the"."""
        return " ".join([w for w in (self.size, self.colour) if w] + [self.shape])


def matches(ref: Reference, obj: SceneObject) -> bool:
    return obj.shape == ref.shape and ref.colour in (None, obj.colour) and ref.size in (None, obj.size)


def resolve(ref: Reference, objects: Sequence[SceneObject]) -> list[int]:
    """Indices of the objects `ref` names (the expression is usable iff exactly one)."""
    kind = [i for i, o in enumerate(objects) if matches(ref, o)]
    if ref.side is None:
        return kind
    axis, sign = {"on the left": (0, 1.0), "on the right": (0, -1.0), "at the top": (1, 1.0), "at the bottom": (1, -1.0)}[ref.side]
    if len(kind) < 2:
        return []  # "the circle on the left" presupposes another circle
    winners = [
        i for i in kind
        if all(sign * (objects[j].box_centre[axis] - objects[i].box_centre[axis]) >= pair_margin(objects[i], objects[j], axis)
               for j in kind if j != i)
    ]
    return winners


def unique_references(objects: Sequence[SceneObject], index: int, spatial: bool = True) -> list[Reference]:
    """Every expression of the grammar that names object `index` alone, shortest first."""
    obj = objects[index]
    out: list[Reference] = []
    attribute_refs = [
        Reference(obj.shape),
        Reference(obj.shape, colour=obj.colour),
        Reference(obj.shape, size=obj.size),
        Reference(obj.shape, colour=obj.colour, size=obj.size),
    ]
    for ref in attribute_refs:
        if resolve(ref, objects) == [index]:
            out.append(ref)
    if spatial:
        for base in attribute_refs[:2]:
            for side in SIDES:
                ref = Reference(base.shape, colour=base.colour, side=side)
                if resolve(ref, objects) == [index]:
                    out.append(ref)
    return out


def attribute_reference(objects: Sequence[SceneObject], index: int) -> Reference | None:
    """The shortest side-free unique expression, used inside questions ("is the red circle ...")."""
    refs = unique_references(objects, index, spatial=False)
    return refs[0] if refs else None


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------


def inventory(objects: Sequence[SceneObject], size: bool = True) -> list[str]:
    """"a large red circle", "two small blue stars", ... grouped, in order of first appearance."""
    counts = Counter(describe(o, size=size) for o in objects)
    order = list(dict.fromkeys(describe(o, size=size) for o in objects))
    return [article(noun) if counts[noun] == 1 else count_phrase(counts[noun], noun) for noun in order]


def _caption_inventory(objects, rng) -> str:
    return join_list(inventory(objects)) + "."


def _caption_counts(objects, rng) -> str:
    by_shape = Counter(o.shape for o in objects)
    parts = [count_phrase(n, s) if n > 1 else article(s) for s, n in sorted(by_shape.items())]
    n = len(objects)
    head = "a single shape" if n == 1 else f"{NUMBER_WORDS[n]} shapes"
    return f"{head} on a grey background: {join_list(parts)}."


def _caption_relation(objects, rng) -> str:
    pairs = [(i, j, rel) for i in range(len(objects)) for j in range(len(objects)) if i != j
             for rel in clear_relations(objects[i], objects[j])]
    if not pairs:
        return _caption_location(objects, rng)
    i, j, rel = pairs[int(rng.integers(len(pairs)))]
    return f"{article(describe(objects[i]))} {rel} {article(describe(objects[j]))}."


def _caption_location(objects, rng) -> str:
    picks = rng.permutation(len(objects))[:2]
    parts = [f"{article(describe(objects[k]))} {location(objects[k])}" for k in picks]
    return join_list(parts) + "."


def _caption_colours(objects, rng) -> str:
    by_colour = Counter(o.colour for o in objects)
    parts = [count_phrase(n, f"{c} object") if n > 1 else article(f"{c} object") for c, n in sorted(by_colour.items())]
    return f"a picture with {join_list(parts)}."


CAPTION_PATTERNS = (_caption_inventory, _caption_counts, _caption_relation, _caption_location, _caption_colours)


def captions(objects: Sequence[SceneObject], rng: np.random.Generator) -> list[str]:
    """Five captions, one per pattern (as COCO has five per image), in a per-image random order."""
    if not objects:
        return ["an empty grey background."] * len(CAPTION_PATTERNS)
    texts = [pattern(objects, rng) for pattern in CAPTION_PATTERNS]
    return [texts[k] for k in rng.permutation(len(texts))]
