"""The toy world's annotations in the official dataset layouts (/work/notes/layouts.md).

Each function turns a split's `ImageRecord`s into the exact structure of a public release, so the
project's real readers and converters run on toy data unchanged. Field-by-field choices:

* **COCO captions** (`captions_<subtype>.json`): five captions per image; `file_name` is the image's
  base name, resolved against the split's image folder (`images/<subtype>/`).
* **VQAv2** (`v2_OpenEnded_mscoco_<subtype>_questions.json`, `v2_mscoco_<subtype>_annotations.json`):
  `data_subtype` = `toy<split>`, so the official path rule `<subtype>/COCO_<subtype>_{id:012d}.jpg`
  resolves under `images/`. `question_id = image_id * 1000 + k` as in VQAv2. Ten identical answers
  (confidence "yes"); `question_type` holds the toy category (color, shape, count, existence,
  position) so results can be broken down by it; `answer_type` uses VQAv2's three values.
* **RefCOCO** (`refs(unc).p` + `instances.json`): one ref per uniquely nameable object, its unique
  expressions as sentences; `category_id` is the shape (colour is an attribute, as in COCO
  categories); `bbox` is the visible box `[x, y, w, h]` in pixels, `segmentation` its visible mask as
  uncompressed RLE (`iscrowd` 0). `file_name` follows the release's quirk
  `COCO_train2014_{image_id:012d}_{ann_id}.jpg`; readers build paths from `image_id` with the
  `train2014/COCO_train2014_{image_id:012d}.jpg` rule, which resolves under `images/` through links.
  The same refs are the grounded-captioning data (box -> expression), as RefCOCO is in the paper.
* **POPE** (`coco_pope_<sampling>.json`, JSON lines): see `lyrics.toyworld.pope`.
* **MME** layout (b): `<subtask>/<name>.jpg` beside `<subtask>/<name>.txt`, two lines per image
  (`question<TAB>Yes`, `question<TAB>No`), each question ending with " Please answer yes or no.".
* **A-OKVQA** (`aokvqa_v1p0_<split>.json`): four choices, ten direct answers (the correct choice),
  one rationale; `question_id` is a string; images by the `val2017/{image_id:012d}.jpg` rule.
* **Shikra GPT4Gen-RD** (JSON lines): pixel xyxy boxes, `<boxes>` placeholders with one index list
  per placeholder; `img_path` is the image's base name in the split's image folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from lyrics.toyworld import spec
from lyrics.toyworld.annotate import ImageRecord, split_subtype, split_tag_pool
from lyrics.toyworld.pope import SAMPLINGS, build_pope

NUM_ANSWERS = 10
INFO_VERSION = "1.0"


def info(split: str, seed: int, what: str) -> dict:
    return {
        "description": f"Lyrics toy world {what}, split {split} (seed {seed})",
        "version": INFO_VERSION,
        "year": 2024,
        "contributor": "lyrics.toyworld",
    }


def coco_captions(records: Sequence[ImageRecord], split: str, seed: int) -> dict:
    images, annotations = [], []
    for rec in records:
        images.append({"id": rec.image_id, "file_name": rec.file_name, "width": rec.width, "height": rec.height})
        for k, caption in enumerate(rec.captions):
            annotations.append({"id": rec.image_id * 10 + k, "image_id": rec.image_id, "caption": caption})
    return {"info": info(split, seed, "captions"), "licenses": [], "images": images, "annotations": annotations}


def vqa_questions_file(records: Sequence[ImageRecord], split: str, seed: int) -> dict:
    questions = [
        {"image_id": rec.image_id, "question": qa.question, "question_id": rec.image_id * 1000 + k}
        for rec in records
        for k, qa in enumerate(rec.vqa)
    ]
    return {
        "info": info(split, seed, "VQA questions"),
        "task_type": "Open-Ended",
        "data_type": "mscoco",
        "data_subtype": split_subtype(split),
        "questions": questions,
    }


def vqa_annotations_file(records: Sequence[ImageRecord], split: str, seed: int) -> dict:
    annotations = []
    for rec in records:
        for k, qa in enumerate(rec.vqa):
            annotations.append(
                {
                    "question_type": qa.question_type,
                    "multiple_choice_answer": qa.answer,
                    "answers": [
                        {"answer": qa.answer, "answer_confidence": "yes", "answer_id": n + 1} for n in range(NUM_ANSWERS)
                    ],
                    "image_id": rec.image_id,
                    "answer_type": qa.answer_type,
                    "question_id": rec.image_id * 1000 + k,
                }
            )
    return {
        "info": info(split, seed, "VQA annotations"),
        "data_type": "mscoco",
        "data_subtype": split_subtype(split),
        "annotations": annotations,
    }


SHAPE_CATEGORY = {shape: k + 1 for k, shape in enumerate(spec.SHAPES)}


def annotation_id(image_id: int, k: int) -> int:
    """COCO annotation id of object k of an image (at most 8 objects per image, so ids never collide)."""
    return image_id * 100 + k


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def refcoco(records: Sequence[ImageRecord], split_names: dict[str, str], start_ids: tuple[int, int] = (1, 1)) -> tuple[list[dict], dict]:
    """`(refs, instances)` for the records; `split_names` maps a toy split to the refs' `split` value.

    Returns the list that goes into `refs(unc).p` (builtins only) and the COCO instances dict.
    """
    ref_id, sent_id = start_ids
    refs: list[dict] = []
    images, annotations = [], []
    for rec in records:
        images.append({"id": rec.image_id, "file_name": f"COCO_train2014_{rec.image_id:012d}.jpg", "width": rec.width, "height": rec.height})
        for k, obj in enumerate(rec.objects):
            x1, y1, x2, y2 = obj.box
            annotations.append(
                {
                    "id": annotation_id(rec.image_id, k),
                    "image_id": rec.image_id,
                    "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                    "category_id": SHAPE_CATEGORY[obj.shape],
                    "area": float(obj.area),
                    "iscrowd": 0,
                    "segmentation": rec.masks[k],
                }
            )
        for k, expressions in rec.refs:
            sentences = []
            for ref in expressions:
                sentences.append({"sent": ref.text, "raw": ref.text, "tokens": _tokens(ref.text), "sent_id": sent_id})
                sent_id += 1
            ann = annotation_id(rec.image_id, k)
            refs.append(
                {
                    "ref_id": ref_id,
                    "ann_id": ann,
                    "image_id": rec.image_id,
                    "split": split_names[rec.split],
                    "sentences": sentences,
                    "sent_ids": [s["sent_id"] for s in sentences],
                    "category_id": SHAPE_CATEGORY[rec.objects[k].shape],
                    "file_name": f"COCO_train2014_{rec.image_id:012d}_{ann}.jpg",
                }
            )
            ref_id += 1
    categories = [{"id": cid, "name": shape, "supercategory": "shape"} for shape, cid in SHAPE_CATEGORY.items()]
    return refs, {"info": info("+".join(sorted(set(split_names.values()))), 0, "instances"), "images": images,
                  "annotations": annotations, "categories": categories}


def pope_lines(records: Sequence[ImageRecord], sampling: str, rng, paraphrase: bool = False) -> list[dict]:
    """POPE's question lines; with `paraphrase`, question n in held-out phrasing n (`pope.PARAPHRASES`)."""
    pool = split_tag_pool(records[0].split) if records else []
    questions = build_pope([rec.tags for rec in records], sampling, rng, pool=pool)
    return [
        {"question_id": n + 1, "image": records[q.image_index].file_name, "text": q.paraphrase(n) if paraphrase else q.text, "label": q.label}
        for n, q in enumerate(questions)
    ]


def mme_name(rec: ImageRecord) -> str:
    return f"{rec.image_id:012d}"


def mme_text(rec: ImageRecord, subtask: str) -> str | None:
    """The txt file of one image for one MME subtask, or None when the image has no pair for it."""
    for pair in rec.mme:
        if pair.subtask == subtask:
            return f"{pair.yes}\tYes\n{pair.no}\tNo\n"
    return None


def aokvqa(records: Sequence[ImageRecord], split: str) -> list[dict]:
    out = []
    for rec in records:
        for k, mc in enumerate(rec.multiple_choice):
            correct = mc.choices[mc.correct]
            out.append(
                {
                    "split": split,
                    "image_id": rec.image_id,
                    "question_id": f"toy{split}_{rec.image_id:012d}_{k}_{mc.question_type}",
                    "question": mc.question,
                    "choices": list(mc.choices),
                    "correct_choice_idx": mc.correct,
                    "direct_answers": [correct] * NUM_ANSWERS,
                    "difficult_direct_answer": False,
                    "rationales": [mc.rationale],
                }
            )
    return out


def shikra_rd(records: Sequence[ImageRecord]) -> list[dict]:
    out = []
    for rec in records:
        for turn in rec.dialogues:
            out.append(
                {
                    "img_path": rec.file_name,
                    "boxes": [list(rec.objects[k].box) for k in turn.boxes],
                    "question": turn.question,
                    "question_boxes_seq": [list(seq) for seq in turn.question_boxes_seq],
                    "answer": turn.answer,
                    "answer_boxes_seq": [list(seq) for seq in turn.answer_boxes_seq],
                }
            )
    return out


def json_lines(items: Sequence[dict]) -> str:
    return "".join(json.dumps(item) + "\n" for item in items)


__all__ = [
    "SAMPLINGS",
    "aokvqa",
    "coco_captions",
    "json_lines",
    "mme_name",
    "mme_text",
    "pope_lines",
    "refcoco",
    "shikra_rd",
    "vqa_annotations_file",
    "vqa_questions_file",
]
