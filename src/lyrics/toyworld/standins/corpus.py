"""Training material for the stand-ins, read back from a generated toy world's official files.

The CLIP stand-in and the MQ-Former's WordPiece vocabulary learn from what `generate_world` wrote
(COCO captions, VQAv2, RefCOCO refs, the Shikra dialogues), not from in-memory generator objects,
so they see exactly the data every other stage sees. Only the train split is used for training; val
is held out for the stand-ins' checks.

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

from lyrics.refiner.spatial import box_from_pixels, format_box, format_spatial
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


def vocabulary_texts(images: list[ToyImage], fmt: str = "int1000") -> list[str]:
    """The text `build_mqformer_tokenizer` trains the MQ-Former's WordPiece vocabulary on, one
    document per image: its captions, question/answer pairs and referential dialogue, referring
    expressions with their boxes, and the spatial representation of its objects."""
    docs = []
    for img in images:
        parts = list(img.captions)
        parts += [f"Question: {q} Answer: {a}" for q, a in img.qa + img.dialogues]
        parts += [f"{expr} is at <Bbox>{format_box(box, fmt)}</Box>." for expr, box in img.boxes]
        if img.objects:
            parts.append("Objects: " + format_spatial(img.objects, fmt))
        docs.append(" ".join(parts))
    return docs
