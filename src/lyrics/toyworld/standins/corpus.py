"""Training material for the stand-ins, read back from a generated toy world's official files.

The stand-ins learn from what `generate_world` wrote (COCO captions, VQAv2, RefCOCO refs, the
Shikra dialogues), not from in-memory generator objects, so they see exactly the data every other
stage sees. Only the train split is used for training; val is held out for the stand-ins' checks.

Box coordinates in text follow the paper's convention (`lyrics.refiner.spatial`, "int1000" by
default): `<Bbox>(x1,y1),(x2,y2)</Box>` for a box, `<br><T>tag</T><Bbox>...</Box></br>` for an object
of the spatial representation.
"""

from __future__ import annotations

import json
import pickle
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lyrics.refiner.spatial import box_from_pixels, format_box, format_spatial
from lyrics.toyworld.annotate import split_tag_pool
from lyrics.toyworld.language import article
from lyrics.toyworld.layouts import annotation_id
from lyrics.toyworld.world import load_manifest


class _NoGlobals(pickle.Unpickler):
    """RefCOCO refs hold builtins only; refusing every global makes loading a refs file safe."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        raise pickle.UnpicklingError(f"refs file references {module}.{name}; only builtins are allowed")


def load_refs(path: str | Path) -> list[dict]:
    with open(path, "rb") as handle:
        refs = _NoGlobals(handle).load()
    if not isinstance(refs, list):
        raise ValueError(f"{path}: expected a list of refs, got {type(refs).__name__}")
    return refs


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"toy world file {path} is missing") from None


def _file(manifest: dict, fmt: str, split: str) -> dict:
    for entry in manifest["files"]:
        if entry["format"] == fmt and entry["split"] == split:
            return entry
    raise FileNotFoundError(f"the toy world's world.json lists no {fmt} file for split {split!r}")


@dataclass
class ToyImage:
    """One image of the world with its texts (everything the stand-ins train on)."""

    image_id: int
    path: Path
    captions: list[str]
    qa: list[tuple[str, str]]
    boxes: list[tuple[str, tuple[float, float, float, float]]]  # (referring expression, normalised box)
    objects: list[tuple[str, tuple[float, float, float, float]]]  # (tag, normalised box) in draw order
    dialogues: list[tuple[str, str]]  # question and answer with boxes written out


def load_split(world_dir: str | Path, split: str = "train", fmt: str = "int1000") -> list[ToyImage]:
    """Every image of `split` with its captions, VQA pairs, referring expressions and dialogues."""
    root = Path(world_dir)
    manifest = load_manifest(root)
    if split not in manifest["splits"]:
        raise ValueError(f"{root / 'world.json'}: no split {split!r}; splits are {sorted(manifest['splits'])}")

    captions = defaultdict(list)
    cap_entry = _file(manifest, "coco_captions", split)
    for ann in _read_json(root / cap_entry["path"])["annotations"]:
        captions[ann["image_id"]].append(ann["caption"])

    qa = defaultdict(list)
    questions = _read_json(root / _file(manifest, "vqav2_questions", split)["path"])["questions"]
    answers = {a["question_id"]: a["multiple_choice_answer"] for a in _read_json(root / _file(manifest, "vqav2_annotations", split)["path"])["annotations"]}
    for q in questions:
        qa[q["image_id"]].append((q["question"], answers[q["question_id"]]))

    images = [img for img in manifest["images"] if img["split"] == split]
    by_id = {img["image_id"]: img for img in images}
    boxes = defaultdict(list)
    # The zero-shot refs live in their own RefCOCO-style dataset (split "test"); the others share one.
    zeroshot = split == "zeroshot"
    refs_path = root / _file(manifest, "refcoco_refs", "zeroshot" if zeroshot else "train+val+test")["path"]
    objects_by_ann = {annotation_id(img["image_id"], k): o for img in images for k, o in enumerate(img["objects"])}
    for ref in load_refs(refs_path):
        img = by_id.get(ref["image_id"])
        if img is None or (not zeroshot and ref["split"] != split):
            continue
        obj = objects_by_ann.get(ref["ann_id"])
        if obj is None:
            raise ValueError(f"{refs_path}: ref {ref['ref_id']} names ann_id {ref['ann_id']}, which is no object of image {ref['image_id']}")
        for sentence in ref["sentences"]:
            boxes[ref["image_id"]].append((sentence["sent"], tuple(obj["box_norm"])))

    dialogues = defaultdict(list)
    by_name = {Path(img["file_name"]).name: img for img in images}
    rd_path = root / _file(manifest, "shikra_rd", split)["path"]
    for n, line in enumerate(rd_path.read_text(encoding="utf-8").splitlines()):
        item = json.loads(line)
        img = by_name.get(item["img_path"])
        if img is None:
            raise ValueError(f"{rd_path}, line {n + 1}: img_path {item['img_path']!r} is no image of split {split!r}")
        image_id, size = img["image_id"], (img["width"], img["height"])
        question = _fill_boxes(item["question"], item["boxes"], item["question_boxes_seq"], size, fmt)
        answer = _fill_boxes(item["answer"], item["boxes"], item["answer_boxes_seq"], size, fmt)
        dialogues[image_id].append((question, answer))

    return [
        ToyImage(
            image_id=img["image_id"],
            path=root / img["file_name"],
            captions=captions[img["image_id"]],
            qa=qa[img["image_id"]],
            boxes=boxes[img["image_id"]],
            objects=[(o["tag"], tuple(o["box_norm"])) for o in img["objects"]],
            dialogues=dialogues[img["image_id"]],
        )
        for img in images
    ]


def world_identity(world_dir: str | Path) -> dict:
    """What distinguishes one generated world from another (a stand-in records what it saw)."""
    manifest = load_manifest(world_dir)
    return {key: manifest[key] for key in ("version", "seed", "sizes")}


@dataclass
class StandinData:
    """The train split (training) and the val split (held-out checks), read once."""

    train: list[ToyImage]
    val: list[ToyImage]
    world: dict

    @classmethod
    def load(cls, world_dir: str | Path) -> "StandinData":
        return cls(train=load_split(world_dir, "train"), val=load_split(world_dir, "val"), world=world_identity(world_dir))


def _fill_boxes(text: str, boxes: list, seqs: list, size: tuple[int, int], fmt: str) -> str:
    for seq in seqs:
        rendered = " ".join(f"<Bbox>{format_box(box_from_pixels(boxes[i], *size), fmt)}</Box>" for i in seq)
        text = text.replace("<boxes>", rendered, 1)
    return text


# Facts in which each colour, shape, size and answer word is predictable from its own cue words. A
# real LLM has met every word in contexts that tell it apart from its neighbours; the toy corpus alone
# never does that for colours (any colour fits "a ... circle"), and the stand-in would end with nearly
# identical output embeddings for them, which LoRA cannot pull apart in a few hundred steps.
_FACTS = {
    "red": ("a ripe tomato", "a fire truck", "blood"),
    "green": ("fresh grass", "a frog", "a lime"),
    "blue": ("a clear sky", "the deep sea", "a sapphire"),
    "yellow": ("a lemon", "the sun", "a banana"),
    "purple": ("a plum", "a grape", "lavender"),
    "orange": ("a carrot", "a pumpkin", "a tangerine"),
}
_SHAPE_FACTS = {
    "circle": "is round and has no corners",
    "square": "has four equal sides",
    "triangle": "has three corners",
    "star": "has five points",
    "hexagon": "has six sides",
    "diamond": "is a square standing on one corner",
}


def knowledge_documents(rng: np.random.Generator, count: int) -> list[str]:
    """`count` short documents of colour, shape, size and yes/no facts, and counting sequences."""
    docs = []
    colours, shapes = list(_FACTS), list(_SHAPE_FACTS)
    for _ in range(count):
        kind = rng.integers(4)
        if kind == 0:
            colour = colours[rng.integers(len(colours))]
            thing = _FACTS[colour][rng.integers(3)]
            other = colours[rng.integers(len(colours))]
            docs.append(f"The colour of {thing} is {colour}. Is {thing} {other}? {'yes' if other == colour else 'no'}.")
        elif kind == 1:
            shape = shapes[rng.integers(len(shapes))]
            docs.append(f"A {shape} {_SHAPE_FACTS[shape]}. This shape is a {shape}.")
        elif kind == 2:
            big = rng.integers(2)
            docs.append(f"An elephant is large and an ant is small. The {'elephant' if big else 'ant'} is {'large' if big else 'small'}.")
        else:
            start = int(rng.integers(0, 988))
            docs.append("Counting: " + " ".join(str(n) for n in range(start, start + 12)) + ".")
    return docs


# A training document for the LM stand-in: (text, carries next-token loss) segments. In a reading
# drill only the answer carries loss: the object list and the question are unpredictable where they
# stand, and their loss would swamp the few answer tokens that teach the model to read the list.
Segment = tuple[str, bool]
Document = list[Segment]


def document_text(document: Document) -> str:
    return "".join(text for text, _ in document)


def lm_documents(
    images: list[ToyImage],
    rng: np.random.Generator,
    fmt: str = "int1000",
    chat: bool = True,
    drills_per_image: int = 4,
    drill_min_objects: int = 1,
    question_first: bool = False,
    drill_questions: int = 1,
    drill_conjunction: float = 0.0,
    drill_kinds: tuple[float, float, float] | None = None,
    drill_prefix: float = 0.0,
) -> list[Document]:
    """Per image, one text document mixing every kind of toy-world text the LLM will meet
    (captions, question/answer pairs, referring expressions with boxes, the spatial representation,
    referential dialogue; parts shuffled so no fixed order is learned), plus, with `chat`,
    `drills_per_image` reading drills (of `drill_questions` questions each) and short knowledge
    documents, all in a random order."""
    docs: list[Document] = []
    for img in images:
        parts = [c[:1].upper() + c[1:] for c in img.captions[:2]]
        parts += [f"Question: {q} Answer: {a}" for q, a in img.qa]
        parts += [f"{expr[:1].upper() + expr[1:]} is at <Bbox>{format_box(box, fmt)}</Box>." for expr, box in img.boxes[:4]]
        parts += [f"Question: {q} Answer: {a}" for q, a in img.dialogues]
        if img.objects:
            parts.append("Objects: " + format_spatial(img.objects, fmt))
        order = rng.permutation(len(parts))
        docs.append([(" ".join(parts[k] for k in order), True)])
    if chat:
        docs += [[(doc, True)] for doc in knowledge_documents(rng, len(images) // 2)]
        pool = split_tag_pool("train")
        docs += [reading_drill(img, rng, pool, fmt, drill_min_objects, question_first, drill_questions, drill_conjunction, drill_kinds, drill_prefix) for img in images if img.objects for _ in range(drills_per_image)]
        docs = [docs[k] for k in rng.permutation(len(docs))]
    return docs


def reading_drill(
    img: ToyImage,
    rng: np.random.Generator,
    pool: list[str],
    fmt: str = "int1000",
    min_objects: int = 1,
    question_first: bool = False,
    questions: int = 1,
    conjunction: float = 0.0,
    kinds: tuple[float, float, float] | None = None,
    prefix: float = 0.0,
) -> Document:
    """Questions about an object list, in the stage-2 template: "USER: Objects: <list>\nq ASSISTANT: a".

    The stand-in plays an instruction-tuned LLM (Vicuna), which can read a list of objects with boxes
    and answer questions about it; a tiny LM only learns that lookup (an induction-style copy) from many
    short, dense examples. The list is a random subset of the image's ground-truth objects (1 to all,
    in a random order: the refiner orders objects by score, not position) and each question one of
    * "What color is the <shape>?" for a shape that occurs once in the list,
    * "Is there a <tag> in the image?", yes for a listed tag, no for a tag of `pool` (the tags the
      train split may name) that is not listed, most often one sharing its colour or shape with a
      listed object (POPE's adversarial negatives),
    * "Where is the <tag>?" answered with the object's box.
    Built from the train split's ground truth only; the image itself never enters the LM.
    With `questions` > 1 the list is followed by that many turns "\nq ASSISTANT: a", each answer
    supervised: many queries against one list (multi-query associative recall) is what let a
    from-scratch LM learn a lookup at all; with one query per list it stays at chance
    (`bench/lm_lookup.py`). `min_objects` (lists at least that many objects) and `question_first`
    ("USER: q\nObjects: <list> ASSISTANT: a", one question) are probes of `bench/lm_reading.py`:
    neither taught the 2-layer stand-in to pick the asked object's box out of a list of two or more
    (docs/toy-model.md). `conjunction` is the share of "no" questions that ask a
    conjunction foil (colour and shape both listed, on different objects) when the list allows one: a
    probe as well, which moved the yes/no bias instead of teaching the binding. `kinds` weighs the
    three questions (colour, existence, box; None: equally likely). `prefix` is the share of drills
    with one of the image's captions between "USER: " and the list: in stage 2 the image's query
    tokens sit there, and an LM that only ever saw the list right after "USER: " reads it worse
    behind anything else; trained so, it read as well behind a caption as without, but worse in both
    (docs/toy-model.md).
    """
    count = int(rng.integers(min(min_objects, len(img.objects)), len(img.objects) + 1))
    objects = [img.objects[k] for k in rng.permutation(len(img.objects))[:count]]
    turns = [_drill_turn([tag for tag, _ in objects], objects, rng, pool, fmt, conjunction, kinds) for _ in range(questions)]
    if question_first:
        question, answer = turns[0]
        return [(f"USER: {question}\nObjects: ", False), (format_spatial(objects, fmt), False), (" ASSISTANT:", False), (f" {answer}", True)]
    head = "USER: Objects: "
    if prefix and img.captions and rng.random() < prefix:
        head = f"USER: {img.captions[int(rng.integers(len(img.captions)))]}\nObjects: "
    document: Document = [(head, False), (format_spatial(objects, fmt), False)]
    for question, answer in turns:
        document += [(f"\n{question} ASSISTANT:", False), (f" {answer}", True)]
    return document


def _drill_turn(
    tags: list[str], objects: list, rng: np.random.Generator, pool: list[str], fmt: str, conjunction: float = 0.0,
    kinds: tuple[float, float, float] | None = None,
) -> tuple[str, str]:
    """One question of `reading_drill` about the listed `objects` (with their `tags`) and its answer."""
    # 0 colour, 1 existence, 2 box; the unweighted draw stays `integers` so the default corpus is unchanged
    kind = int(rng.integers(3)) if kinds is None else int(rng.choice(3, p=np.asarray(kinds) / sum(kinds)))
    shapes = [tag.split()[-1] for tag in tags]
    unique_shapes = [i for i, shape in enumerate(shapes) if shapes.count(shape) == 1]
    if kind == 0 and unique_shapes:
        i = unique_shapes[int(rng.integers(len(unique_shapes)))]
        return f"What color is the {shapes[i]}?", tags[i].split()[0]
    if kind == 2:
        unique = [i for i, tag in enumerate(tags) if tags.count(tag) == 1] or [0]
        i = unique[int(rng.integers(len(unique)))]
        return f"Where is the {tags[i]}?", f"<Bbox>{format_box(objects[i][1], fmt)}</Box>"
    absent = [tag for tag in pool if tag not in tags]
    near = [tag for tag in absent if any(set(tag.split()) & set(t.split()) for t in tags)]
    if rng.random() < 0.5 or not absent:
        asked, answer = tags[int(rng.integers(len(tags)))], "yes"
    else:
        source = None
        if conjunction:  # a conjunction foil: its colour and its shape are both listed, on different objects
            colours, listed_shapes = {t.split()[0] for t in tags}, set(shapes)
            both = [tag for tag in absent if tag.split()[0] in colours and tag.split()[-1] in listed_shapes]
            if both and rng.random() < conjunction:
                source = both
        if source is None:
            source = near if near and rng.random() < 0.6 else absent
        asked, answer = source[int(rng.integers(len(source)))], "no"
    return f"Is there {article(asked)} in the image?", answer
