"""Open-ended VQA annotations: VQAv2 / OK-VQA, GQA, TextVQA, VizWiz, OCR-VQA.

VQAv2 (OK-VQA has the same schema; files `OpenEnded_mscoco_<subtype>_questions.json`,
`mscoco_<subtype>_annotations.json`)::

    v2_OpenEnded_mscoco_val2014_questions.json
        {"info": {...}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014",
         "questions": [{"image_id": int, "question": str, "question_id": int}]}
    v2_mscoco_val2014_annotations.json
        {"annotations": [{"question_type": str, "multiple_choice_answer": str,
                          "answers": [{"answer": str, "answer_confidence": str, "answer_id": int}] x10,
                          "image_id": int, "answer_type": str, "question_id": int}]}

    image: image_root / <data_subtype> / COCO_<data_subtype>_{image_id:012d}.jpg
           (test-dev2015 questions use the test2015 images)

GQA `<split>_questions.json`: `{qid: {"imageId": str, "question": str, "answer": str,
"fullAnswer": str, "types": {...}}}`; image: `image_root / images / {imageId}.jpg`.

TextVQA `TextVQA_0.5.1_<split>.json`: `{"dataset_type": "val", "data": [{"question_id": int,
"image_id": str, "question": str, "answers": [str] x10}]}`; image:
`image_root / train_images / {image_id}.jpg` (`test_images/` for the test split).

VizWiz `<split>.json`: `[{"image": "VizWiz_val_00000000.jpg", "question": str, "answers":
[{"answer": str, "answer_confidence": str}] x10, "answer_type": str, "answerable": 0|1}]` (test has no
answers); image: `image_root / <split> / <image>`, the split taken from the image name.

OCR-VQA `dataset.json`: `{id: {"imageURL": str, "questions": [str], "answers": [str], "title": str,
"authorName": str, "genre": str, "split": 1|2|3}}` (1 train, 2 val, 3 test); one sample per question;
image: `image_root / images / {id}<ext>` with the URL's extension (.jpg, .png or .gif; when the
image root is given and that file is absent, the other two are tried).

Image root: the dataset's root folder for VQAv2/OK-VQA (holding `val2014/`), GQA, TextVQA, VizWiz and
OCR-VQA (holding `images/`, `train_images/`, `val/`).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from lyrics.data.official.common import (
    FormatError,
    find_files,
    get,
    get_str_list,
    read_json,
    resolve,
)
from lyrics.data.official.samples import QASample

OCRVQA_SPLITS = {1: "train", 2: "val", 3: "test"}
OCRVQA_EXTENSIONS = (".jpg", ".png", ".gif")


def coco_image_name(subtype: str, image_id: int) -> str:
    """`<folder>/COCO_<folder>_{id:012d}.jpg` for a VQA data_subtype (test-dev2015 lives in test2015)."""
    folder = "test2015" if subtype == "test-dev2015" else subtype
    return f"{folder}/COCO_{folder}_{image_id:012d}.jpg"


def _vqa_files(folder: Path, split: str | None, with_answers: bool | None) -> tuple[Path, Path | None]:
    sub = split or "*"
    q_patterns = [f"v2_OpenEnded_mscoco_{sub}_questions.json", f"OpenEnded_mscoco_{sub}_questions.json"]
    a_patterns = [f"v2_mscoco_{sub}_annotations.json", f"mscoco_{sub}_annotations.json"]
    expected = {"questions": q_patterns} | ({"annotations": a_patterns} if with_answers else {})
    found = find_files(folder, expected, "VQAv2 / OK-VQA")
    if split is None:
        matches = sorted(p for pattern in q_patterns for p in glob.glob(str(folder / pattern)))
        if len(matches) > 1:
            raise ValueError(f"{folder}: several question files {[Path(m).name for m in matches]}; pass split=")
    annotations = found.get("annotations")
    if annotations is None and with_answers is None:
        for pattern in a_patterns:
            matches = sorted(glob.glob(str(folder / pattern)))
            if matches:
                annotations = Path(matches[0])
                break
    return found["questions"], annotations


def read_vqa(
    questions: str | os.PathLike,
    annotations: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    split: str | None = None,
    with_answers: bool | None = None,
) -> list[QASample]:
    """Read VQAv2 / OK-VQA questions (and answers when an annotation file is given or found).

    `questions` may be a folder: the question file (and the annotation file, if present or if
    `with_answers=True`) are found by their official names; `split` picks the data_subtype.
    """
    questions = Path(questions)
    if questions.is_dir():
        questions, found = _vqa_files(questions, split, with_answers)
        annotations = annotations if annotations is not None else (None if with_answers is False else found)
    qdata = read_json(questions)
    subtype = get(qdata, "data_subtype", str, questions, None)
    answers_by_id: dict = {}
    if annotations is not None:
        annotations = Path(annotations)
        adata = read_json(annotations)
        for i, ann in enumerate(get(adata, "annotations", list, annotations, None)):
            where = f"annotations[{i}]"
            qid = get(ann, "question_id", (int, str), annotations, where)
            answers = [
                get(a, "answer", str, annotations, f"{where}.answers[{j}]")
                for j, a in enumerate(get(ann, "answers", list, annotations, where))
            ]
            answers_by_id[qid] = (answers, ann, where)
    samples = []
    for i, q in enumerate(get(qdata, "questions", list, questions, None)):
        where = f"questions[{i}]"
        qid = get(q, "question_id", (int, str), questions, where)
        image_id = get(q, "image_id", int, questions, where)
        meta: dict = {"data_subtype": subtype}
        answers: list[str] = []
        if annotations is not None:
            if qid not in answers_by_id:
                raise FormatError(annotations, f"no annotation for question_id {qid!r}", None, "question_id")
            answers, ann, awhere = answers_by_id[qid]
            meta["multiple_choice_answer"] = get(ann, "multiple_choice_answer", str, annotations, awhere)
            meta["answer_type"] = ann.get("answer_type")
            meta["question_type"] = ann.get("question_type")
        samples.append(
            QASample(
                question_id=qid,
                image_id=image_id,
                image_path=resolve(image_root, coco_image_name(subtype, image_id)),
                question=get(q, "question", str, questions, where),
                answers=answers,
                meta=meta,
            )
        )
    return samples


def read_gqa(path: str | os.PathLike, image_root: str | os.PathLike | None = None, split: str | None = None) -> list[QASample]:
    """Read GQA balanced questions (folder: `<split>_questions.json`, e.g. split="testdev_balanced")."""
    path = Path(path)
    if path.is_dir():
        path = find_files(path, {"questions": [f"{split or '*'}_questions.json"]}, "GQA")["questions"]
    data = read_json(path)
    if not isinstance(data, dict):
        raise FormatError(path, f"expected an object keyed by question id, got {type(data).__name__}")
    samples = []
    for qid, q in data.items():
        where = f"question {qid}"
        image_id = get(q, "imageId", str, path, where)
        answer = get(q, "answer", str, path, where, default=None)
        samples.append(
            QASample(
                question_id=qid,
                image_id=image_id,
                image_path=resolve(image_root, "images", f"{image_id}.jpg"),
                question=get(q, "question", str, path, where),
                answers=[] if answer is None else [answer],
                meta={"fullAnswer": q.get("fullAnswer"), "types": q.get("types", {})},
            )
        )
    return samples


def read_textvqa(path: str | os.PathLike, image_root: str | os.PathLike | None = None, split: str | None = None) -> list[QASample]:
    """Read TextVQA (folder: `TextVQA_0.5.1_<split>.json`)."""
    path = Path(path)
    if path.is_dir():
        path = find_files(path, {"questions": [f"TextVQA_0.5.1_{split or '*'}.json"]}, "TextVQA")["questions"]
    data = read_json(path)
    dataset_type = get(data, "dataset_type", str, path, None, default="val")
    folder = "test_images" if dataset_type == "test" else "train_images"
    samples = []
    for i, q in enumerate(get(data, "data", list, path, None)):
        where = f"data[{i}]"
        image_id = get(q, "image_id", str, path, where)
        samples.append(
            QASample(
                question_id=get(q, "question_id", (int, str), path, where),
                image_id=image_id,
                image_path=resolve(image_root, folder, f"{image_id}.jpg"),
                question=get(q, "question", str, path, where),
                answers=get_str_list(q, "answers", path, where, default=[]),
                meta={"dataset_type": dataset_type},
            )
        )
    return samples


def read_vizwiz(path: str | os.PathLike, image_root: str | os.PathLike | None = None, split: str | None = None) -> list[QASample]:
    """Read VizWiz VQA (folder: `<split>.json`). The question id is the image name, as in submissions."""
    path = Path(path)
    if path.is_dir():
        path = find_files(path, {"questions": [f"{split}.json" if split else "val.json"]}, "VizWiz")["questions"]
    data = read_json(path)
    if not isinstance(data, list):
        raise FormatError(path, f"expected a list of questions, got {type(data).__name__}")
    samples = []
    for i, q in enumerate(data):
        where = f"[{i}]"
        image = get(q, "image", str, path, where)
        parts = image.split("_")
        folder = parts[1] if len(parts) >= 3 and parts[0] == "VizWiz" else path.stem
        answers = [
            get(a, "answer", str, path, f"{where}.answers[{j}]")
            for j, a in enumerate(get(q, "answers", list, path, where, default=[]))
        ]
        samples.append(
            QASample(
                question_id=image,
                image_id=image,
                image_path=resolve(image_root, folder, image),
                question=get(q, "question", str, path, where),
                answers=answers,
                meta={"answer_type": q.get("answer_type"), "answerable": q.get("answerable")},
            )
        )
    return samples


def _ocrvqa_image(image_root: str | os.PathLike | None, book_id: str, url: str) -> Path:
    ext = os.path.splitext(url.split("?")[0])[1].lower()
    ext = ext if ext in OCRVQA_EXTENSIONS else ".jpg"
    path = resolve(image_root, "images", f"{book_id}{ext}")
    if image_root is not None and not path.exists():
        for other in OCRVQA_EXTENSIONS:
            candidate = resolve(image_root, "images", f"{book_id}{other}")
            if candidate.exists():
                return candidate
    return path


def read_ocrvqa(path: str | os.PathLike, image_root: str | os.PathLike | None = None, split: str | int | None = None) -> list[QASample]:
    """Read OCR-VQA `dataset.json`; `split` is "train"/"val"/"test" (or 1/2/3)."""
    path = Path(path)
    if path.is_dir():
        path = find_files(path, {"dataset": ["dataset.json"]}, "OCR-VQA")["dataset"]
    if isinstance(split, str) and split.isdigit():
        split = int(split)
    split_name = OCRVQA_SPLITS.get(split, split) if split is not None else None
    if split_name is not None and split_name not in OCRVQA_SPLITS.values():
        raise ValueError(f"OCR-VQA split must be train, val or test (or 1, 2, 3), got {split!r}")
    data = read_json(path)
    if not isinstance(data, dict):
        raise FormatError(path, f"expected an object keyed by book id, got {type(data).__name__}")
    samples = []
    for book_id, book in data.items():
        where = f"id {book_id}"
        book_split = OCRVQA_SPLITS.get(get(book, "split", int, path, where))
        if book_split is None:
            raise FormatError(path, f"split must be 1, 2 or 3, got {book['split']!r}", where, "split")
        if split_name is not None and book_split != split_name:
            continue
        questions = get_str_list(book, "questions", path, where)
        answers = get_str_list(book, "answers", path, where)
        if len(questions) != len(answers):
            raise FormatError(path, f"{len(questions)} questions but {len(answers)} answers", where, "answers")
        image_path = _ocrvqa_image(image_root, book_id, get(book, "imageURL", str, path, where))
        meta = {k: book.get(k) for k in ("title", "authorName", "genre")} | {"split": book_split}
        for k, (question, answer) in enumerate(zip(questions, answers)):
            samples.append(
                QASample(
                    question_id=f"{book_id}_{k}",
                    image_id=book_id,
                    image_path=image_path,
                    question=question,
                    answers=[answer],
                    meta=dict(meta),
                )
            )
    return samples


__all__ = ["read_vqa", "read_gqa", "read_textvqa", "read_vizwiz", "read_ocrvqa", "coco_image_name"]
