"""Questions about a toy scene with answers correct by construction: VQA, multiple choice,
MME yes/no pairs and referential dialogue.

All of them are computed from the ground truth objects with the definitions of
`lyrics.toyworld.language` (visible-box centres, `RELATION_MARGIN`, unique referring expressions).
A question is only generated when its answer is unambiguous: "what color is the star?" needs
exactly one star, "what is to the left of the red circle?" needs exactly one object clearly to its
left and none level with it.

`pool` arguments are the tags a split may mention: training splits never *name* a zero-shot
colour-shape pair, not even in a "no" question, so the pairs are unseen in text as well as in pixels.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lyrics.toyworld import spec
from lyrics.toyworld.language import (
    OPPOSITE,
    RELATIONS,
    Reference,
    article,
    attribute_reference,
    clear_relations,
    count_phrase,
    describe,
    holds,
    level,
    plural,
    resolve,
)
from lyrics.toyworld.scenes import SceneObject

QUESTION_TYPES = ("color", "shape", "count", "existence", "position")
MME_SUBTASKS = ("existence", "count", "position", "color")
MME_SUFFIX = " Please answer yes or no."
# A neighbour is "the" neighbour only if the second nearest object is this much farther away.
NEIGHBOUR_RATIO = 1.3


@dataclass(frozen=True)
class QA:
    """One open-ended question. `answer_type` uses VQAv2's values: "yes/no", "number", "other"."""

    question: str
    answer: str
    question_type: str
    answer_type: str


@dataclass(frozen=True)
class MultipleChoice:
    question: str
    choices: tuple[str, ...]
    correct: int
    question_type: str
    rationale: str


@dataclass(frozen=True)
class Dialogue:
    """One referential-dialogue turn (Shikra GPT4Gen-RD): text with `<boxes>` placeholders.

    `boxes` are indices into the scene's objects; `question_boxes_seq` / `answer_boxes_seq` hold one
    list of indices into `boxes` per placeholder, in order.
    """

    question: str
    answer: str
    boxes: tuple[int, ...]
    question_boxes_seq: tuple[tuple[int, ...], ...]
    answer_boxes_seq: tuple[tuple[int, ...], ...]
    kind: str


@dataclass(frozen=True)
class YesNoPair:
    """An MME image entry: the same subtask asked twice, once true ("Yes") and once false ("No")."""

    subtask: str
    yes: str
    no: str


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _colour_free_subjects(objects: Sequence[SceneObject]) -> list[tuple[int, Reference]]:
    """Objects named uniquely without their colour ("the star", "the large star")."""
    out = []
    for i, obj in enumerate(objects):
        for ref in (Reference(obj.shape), Reference(obj.shape, size=obj.size)):
            if resolve(ref, objects) == [i]:
                out.append((i, ref))
                break
    return out


def _unique_colour_subjects(objects: Sequence[SceneObject]) -> list[int]:
    counts = Counter(o.colour for o in objects)
    return [i for i, o in enumerate(objects) if counts[o.colour] == 1]


def _absent_tag(objects: Sequence[SceneObject], pool: Sequence[str], rng: np.random.Generator) -> str | None:
    """An absent tag; half the time a near miss that shares a colour or shape with a present object."""
    present = {o.tag for o in objects}
    absent = [t for t in pool if t not in present]
    if not absent:
        return None
    colours, shapes = {o.colour for o in objects}, {o.shape for o in objects}
    near = [t for t in absent if t.split()[0] in colours or t.split()[1] in shapes]
    choices = near if near and rng.random() < 0.5 else absent
    return choices[int(rng.integers(len(choices)))]


def _related_pairs(objects: Sequence[SceneObject], refs: Sequence[Reference | None]) -> list[tuple[int, int, str, Reference, Reference]]:
    """(a, b, relation, ref a, ref b) for every clear relation between uniquely nameable objects."""
    out = []
    for a in range(len(objects)):
        for b in range(len(objects)):
            if a != b and refs[a] and refs[b]:
                out.extend((a, b, rel, refs[a], refs[b]) for rel in clear_relations(objects[a], objects[b]))
    return out


def _only_neighbour_in(objects: Sequence[SceneObject], anchor: int, relation: str) -> int | None:
    """The single object clearly `relation` the anchor, when no other object is level with it."""
    axis = RELATIONS[relation][0]
    hits, tied = [], False
    for j, obj in enumerate(objects):
        if j == anchor:
            continue
        if holds(relation, obj, objects[anchor]):
            hits.append(j)
        elif level(obj, objects[anchor], axis):
            tied = True
    return hits[0] if len(hits) == 1 and not tied else None


def _pick(rng: np.random.Generator, items: list, k: int) -> list:
    if len(items) <= k:
        return list(items)
    return [items[i] for i in sorted(rng.choice(len(items), size=k, replace=False))]


def vqa_questions(objects: Sequence[SceneObject], rng: np.random.Generator, pool: Sequence[str]) -> list[QA]:
    """Open-ended questions of the five types, at most two per type."""
    qa: list[QA] = []
    for i, ref in _pick(rng, _colour_free_subjects(objects), 2):
        qa.append(QA(f"What color is the {ref.noun}?", objects[i].colour, "color", "other"))
    for i in _pick(rng, _unique_colour_subjects(objects), 1):
        qa.append(QA(f"What shape is the {objects[i].colour} object?", objects[i].shape, "shape", "other"))

    counts = Counter(o.shape for o in objects)
    colour_counts = Counter(o.colour for o in objects)
    count_options = [
        (f"How many {plural(s)} are there?", counts.get(s, 0)) for s in spec.SHAPES
    ] + [(f"How many {c} objects are there?", colour_counts.get(c, 0)) for c in spec.COLOURS]
    count_options.append(("How many objects are there?", len(objects)))
    # Mostly present things (zero answers are easy and would dominate), sometimes an absent one.
    present = [q for q in count_options if q[1] > 0]
    absent = [q for q in count_options if q[1] == 0]
    chosen = _pick(rng, present, 2 if rng.random() < 0.8 or not absent else 1)
    if len(chosen) < 2 and absent:
        chosen += _pick(rng, absent, 1)
    qa.extend(QA(q, str(n), "count", "number") for q, n in chosen)

    if objects:
        obj = objects[int(rng.integers(len(objects)))]
        qa.append(QA(f"Is there {article(obj.tag)}?", "yes", "existence", "yes/no"))
    missing = _absent_tag(objects, pool, rng)
    if missing is not None:
        qa.append(QA(f"Is there {article(missing)}?", "no", "existence", "yes/no"))

    refs = [attribute_reference(objects, i) for i in range(len(objects))]
    pairs = _related_pairs(objects, refs)
    if pairs:
        a, b, rel, ra, rb = pairs[int(rng.integers(len(pairs)))]
        truthful = rng.random() < 0.5
        asked = rel if truthful else OPPOSITE[rel]
        qa.append(QA(f"Is the {ra.noun} {asked} the {rb.noun}?", "yes" if truthful else "no", "position", "yes/no"))
    open_position = []
    for anchor, ref in enumerate(refs):
        if ref is None:
            continue
        for rel in RELATIONS:
            hit = _only_neighbour_in(objects, anchor, rel)
            if hit is not None:
                open_position.append((anchor, ref, rel, hit))
    for anchor, ref, rel, hit in _pick(rng, open_position, 1):
        qa.append(QA(f"What is {rel} the {ref.noun}?", objects[hit].tag, "position", "other"))
    return qa


def _distractors(correct: str, vocabulary: Sequence[str], rng: np.random.Generator, k: int = 3) -> list[str]:
    others = [v for v in vocabulary if v != correct]
    return [others[i] for i in rng.choice(len(others), size=k, replace=False)]


def multiple_choice(objects: Sequence[SceneObject], rng: np.random.Generator, limit: int = 2) -> list[MultipleChoice]:
    """Four-option colour / shape / count questions (A-OKVQA style)."""
    candidates: list[tuple[str, str, str, list[str], str]] = []  # type, question, answer, vocabulary, rationale
    for i, ref in _colour_free_subjects(objects):
        colour = objects[i].colour
        candidates.append(("color", f"What color is the {ref.noun}?", colour, list(spec.COLOURS), f"The {ref.noun} is {colour}."))
    for i in _unique_colour_subjects(objects):
        o = objects[i]
        candidates.append(("shape", f"What shape is the {o.colour} object?", o.shape, list(spec.SHAPES),
                           f"The only {o.colour} object is {article(o.shape)}."))
    for shape, n in sorted(Counter(o.shape for o in objects).items()):
        numbers = [str(v) for v in range(spec.MAX_OBJECTS + 1)]
        candidates.append(("count", f"How many {plural(shape)} are there?", str(n), numbers,
                           f"There {'is' if n == 1 else 'are'} {count_phrase(n, shape)} in the image."))
    out = []
    for kind, question, answer, vocabulary, rationale in _pick(rng, candidates, limit):
        options = [answer] + _distractors(answer, vocabulary, rng)
        order = rng.permutation(4)
        choices = tuple(options[k] for k in order)
        out.append(MultipleChoice(question, choices, choices.index(answer), kind, rationale))
    return out


def mme_pairs(objects: Sequence[SceneObject], rng: np.random.Generator, pool: Sequence[str]) -> list[YesNoPair]:
    """At most one yes/no pair per MME subtask (existence, count, position, color) for this image."""
    out: list[YesNoPair] = []
    missing = _absent_tag(objects, pool, rng)
    if objects and missing is not None:
        obj = objects[int(rng.integers(len(objects)))]
        out.append(YesNoPair("existence", f"Is there {article(obj.tag)} in this image?", f"Is there {article(missing)} in this image?"))

    counts = Counter(o.shape for o in objects)
    if counts:
        shape = sorted(counts)[int(rng.integers(len(counts)))]
        n = counts[shape]
        wrong = n + 1 if n == 1 or rng.random() < 0.5 else n - 1

        def ask(k: int) -> str:
            return f"Is there exactly one {shape} in this image?" if k == 1 else f"Are there exactly {count_phrase(k, shape)} in this image?"

        out.append(YesNoPair("count", ask(n), ask(wrong)))

    pairs = _related_pairs(objects, [attribute_reference(objects, i) for i in range(len(objects))])
    if pairs:
        a, b, rel, ra, rb = pairs[int(rng.integers(len(pairs)))]
        out.append(YesNoPair("position", f"Is the {ra.noun} {rel} the {rb.noun}?", f"Is the {ra.noun} {OPPOSITE[rel]} the {rb.noun}?"))

    subjects = _colour_free_subjects(objects)
    if subjects:
        i, ref = subjects[int(rng.integers(len(subjects)))]
        wrong_colour = _distractors(objects[i].colour, list(spec.COLOURS), rng, 1)[0]
        out.append(YesNoPair("color", f"Is the {ref.noun} in this image {objects[i].colour}?", f"Is the {ref.noun} in this image {wrong_colour}?"))
    return [YesNoPair(p.subtask, p.yes + MME_SUFFIX, p.no + MME_SUFFIX) for p in out]


def nearest_neighbour(objects: Sequence[SceneObject], index: int) -> int | None:
    """The clearly nearest other object (by visible-box centre distance), or None."""
    cx, cy = objects[index].box_centre
    dists = sorted((math.hypot(o.box_centre[0] - cx, o.box_centre[1] - cy), j) for j, o in enumerate(objects) if j != index)
    if not dists:
        return None
    if len(dists) > 1 and dists[1][0] < NEIGHBOUR_RATIO * dists[0][0]:
        return None
    return dists[0][1]


def dialogues(objects: Sequence[SceneObject], rng: np.random.Generator, limit: int = 2) -> list[Dialogue]:
    """Questions about a boxed object (its colour, shape, identity, neighbour) with boxed answers."""
    candidates: list[Dialogue] = []
    for i, o in enumerate(objects):
        candidates.append(Dialogue("What color is the object <boxes>?", f"The object <boxes> is {o.colour}.",
                                   (i,), ((0,),), ((0,),), "color"))
        candidates.append(Dialogue("What is the object <boxes>?", f"It is {article(describe(o))} <boxes>.",
                                   (i,), ((0,),), ((0,),), "identity"))
        candidates.append(Dialogue(f"What shape is the {o.colour} object <boxes>?",
                                   f"The {o.colour} object <boxes> is {article(o.shape)}.", (i,), ((0,),), ((0,),), "shape"))
        j = nearest_neighbour(objects, i)
        if j is not None:
            candidates.append(Dialogue(f"What is next to the {o.tag} <boxes>?", f"The {objects[j].tag} <boxes> is next to it.",
                                       (i, j), ((0,),), ((1,),), "neighbour"))
    return _pick(rng, candidates, limit)
