"""An independent reading of the toy world's ground truth, used to check every generated answer.

It re-implements the definitions documented in `lyrics.toyworld.language` from scratch, on the
plain object dicts of `world.json`, and parses each question back from its text; it shares no code
with the generators, so a bug there shows up as a disagreement here.
"""

from __future__ import annotations

import pickle
import re

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond")
SIZES = ("small", "large")
WORDS = {w: i for i, w in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))}
RELATIONS = {"to the left of": (0, 1), "to the right of": (0, -1), "above": (1, 1), "below": (1, -1)}
SIDES = {"on the left": (0, 1), "on the right": (0, -1), "at the top": (1, 1), "at the bottom": (1, -1)}


def centre(o, axis):
    return (o["box"][axis] + o["box"][axis + 2]) / 2.0


def margin(a, b, axis):
    ext = lambda o: o["box"][axis + 2] - o["box"][axis]  # noqa: E731
    return max(12.0, 0.5 * min(ext(a), ext(b)))


def rel_holds(rel, a, b):
    axis, sign = RELATIONS[rel]
    return sign * (centre(b, axis) - centre(a, axis)) >= margin(a, b, axis)


def is_level(a, b, axis):
    return abs(centre(b, axis) - centre(a, axis)) < margin(a, b, axis)


_NOUN = re.compile(r"^(?:(small|large) )?(?:(red|green|blue|yellow|purple|orange) )?(circle|square|triangle|star|hexagon|diamond)$")


def parse_noun(noun):
    m = _NOUN.match(noun)
    assert m, f"not a noun phrase: {noun!r}"
    return {"size": m.group(1), "colour": m.group(2), "shape": m.group(3)}


def matching(objects, noun):
    spec = parse_noun(noun)
    return [i for i, o in enumerate(objects)
            if o["shape"] == spec["shape"] and spec["colour"] in (None, o["colour"]) and spec["size"] in (None, o["size"])]


def the_one(objects, noun):
    found = matching(objects, noun)
    assert len(found) == 1, f"'the {noun}' names {len(found)} objects"
    return found[0]


def referent(objects, expression):
    """Indices named by a referring expression `the [size] [colour] shape [side]`."""
    assert expression.startswith("the "), expression
    body = expression[4:]
    side = next((s for s in SIDES if body.endswith(" " + s)), None)
    noun = body[: -len(side) - 1] if side else body
    kind = matching(objects, noun)
    if side is None:
        return kind
    axis, sign = SIDES[side]
    return [i for i in kind if len(kind) > 1 and all(
        sign * (centre(objects[j], axis) - centre(objects[i], axis)) >= margin(objects[i], objects[j], axis) for j in kind if j != i)]


def plural_to_shape(word):
    for s in SHAPES:
        if word in (s + "s", s + "es"):
            return s
    raise AssertionError(f"unknown plural {word!r}")


def tags(objects):
    return {f"{o['colour']} {o['shape']}" for o in objects}


def answer(objects, question):
    """The true answer to a generated VQA / multiple-choice question (lower-case string)."""
    q = question
    if m := re.fullmatch(r"What color is the (.+)\?", q):
        return objects[the_one(objects, m.group(1))]["colour"]
    if m := re.fullmatch(r"What shape is the (\w+) object\?", q):
        hits = [o for o in objects if o["colour"] == m.group(1)]
        assert len(hits) == 1, q
        return hits[0]["shape"]
    if m := re.fullmatch(r"How many (\w+) objects are there\?", q):
        return str(sum(o["colour"] == m.group(1) for o in objects))
    if q == "How many objects are there?":
        return str(len(objects))
    if m := re.fullmatch(r"How many (\w+) are there\?", q):
        return str(sum(o["shape"] == plural_to_shape(m.group(1)) for o in objects))
    if m := re.fullmatch(r"Is there an? (\w+ \w+)\?", q):
        return "yes" if m.group(1) in tags(objects) else "no"
    if m := re.fullmatch(r"Is the (.+?) (to the left of|to the right of|above|below) the (.+)\?", q):
        a, b = the_one(objects, m.group(1)), the_one(objects, m.group(3))
        rel = m.group(2)
        if rel_holds(rel, objects[a], objects[b]):
            return "yes"
        opposite = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below", "below": "above"}[rel]
        assert rel_holds(opposite, objects[a], objects[b]), f"{q}: neither way is clear"
        return "no"
    if m := re.fullmatch(r"What is (to the left of|to the right of|above|below) the (.+)\?", q):
        anchor = the_one(objects, m.group(2))
        axis = RELATIONS[m.group(1)][0]
        hits = [j for j, o in enumerate(objects) if j != anchor and rel_holds(m.group(1), o, objects[anchor])]
        level = [j for j, o in enumerate(objects) if j != anchor and j not in hits and is_level(o, objects[anchor], axis)]
        assert len(hits) == 1 and not level, q
        o = objects[hits[0]]
        return f"{o['colour']} {o['shape']}"
    raise AssertionError(f"unknown question pattern: {q!r}")


def mme_truth(objects, question):
    """True/False for an MME yes/no question (suffix already removed)."""
    q = question
    if m := re.fullmatch(r"Is there an? (\w+ \w+) in this image\?", q):
        return m.group(1) in tags(objects)
    if m := re.fullmatch(r"Is there exactly one (\w+) in this image\?", q):
        return sum(o["shape"] == m.group(1) for o in objects) == 1
    if m := re.fullmatch(r"Are there exactly (\w+) (\w+) in this image\?", q):
        return sum(o["shape"] == plural_to_shape(m.group(2)) for o in objects) == WORDS[m.group(1)]
    if m := re.fullmatch(r"Is the (.+?) (to the left of|to the right of|above|below) the (.+)\?", q):
        return answer(objects, f"Is the {m.group(1)} {m.group(2)} the {m.group(3)}?") == "yes"
    if m := re.fullmatch(r"Is the (.+) in this image (\w+)\?", q):
        return objects[the_one(objects, m.group(1))]["colour"] == m.group(2)
    raise AssertionError(f"unknown MME question: {q!r}")


class NoGlobals(pickle.Unpickler):
    """RefCOCO refs must hold builtins only: refuse every global."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"global {module}.{name} refused")


def load_refs(path):
    with open(path, "rb") as handle:
        return NoGlobals(handle).load()
