"""Multiple-choice VQA annotations: A-OKVQA and ScienceQA.

A-OKVQA `aokvqa_v1p0_<split>.json`::

    [{"split": "val", "image_id": int, "question_id": str, "question": str,
      "choices": [str] x4, "correct_choice_idx": int, "direct_answers": [str] x10,
      "difficult_direct_answer": bool, "rationales": [str]}]

(the test split has no `correct_choice_idx` / `direct_answers`); image:
`image_root / <split>2017 / {image_id:012d}.jpg` (COCO 2017; image_root is the COCO root). COCO
image ids are unique across train/val/test, so when the image root is given and that file is
absent, the same name in the other COCO 2017 folders is used if it exists.

ScienceQA `problems.json` + `pid_splits.json`::

    problems.json   {pid: {"question": str, "choices": [str], "answer": int, "hint": str,
                           "image": "image.png" | null, "task": str, "subject": str,
                           "split": "train|val|test", ...}}
    pid_splits.json {"train": [pid], "val": [pid], "test": [pid]}

image: `image_root / images / <split> / <pid> / <image>`; `image_path` is None for text-only
problems. ScienceQA-IMG (the paper's benchmark) = `read_scienceqa(..., split="test", image_only=True)`.
"""

from __future__ import annotations

import os
from pathlib import Path

from lyrics.data.official.common import FormatError, find_files, get, get_str_list, read_json, resolve
from lyrics.data.official.samples import QASample


COCO2017_FOLDERS = ("train2017", "val2017", "test2017")


def _aokvqa_image(image_root: str | os.PathLike | None, split: str, image_id: int) -> Path:
    name = f"{image_id:012d}.jpg"
    path = resolve(image_root, f"{split}2017", name)
    if image_root is not None and not path.exists():
        for folder in COCO2017_FOLDERS:
            if (candidate := resolve(image_root, folder, name)).exists():
                return candidate
    return path


def read_aokvqa(path: str | os.PathLike, image_root: str | os.PathLike | None = None, split: str | None = None) -> list[QASample]:
    """Read A-OKVQA (folder: `aokvqa_v1p0_<split>.json`). `answers` = the 10 direct answers."""
    path = Path(path)
    if path.is_dir():
        path = find_files(path, {"questions": [f"aokvqa_v1p0_{split or 'val'}.json"]}, "A-OKVQA")["questions"]
    data = read_json(path)
    if not isinstance(data, list):
        raise FormatError(path, f"expected a list of questions, got {type(data).__name__}")
    samples = []
    for i, q in enumerate(data):
        where = f"[{i}]"
        image_id = get(q, "image_id", int, path, where)
        q_split = get(q, "split", str, path, where)
        choices = get_str_list(q, "choices", path, where)
        answer_index = get(q, "correct_choice_idx", int, path, where, default=None)
        if answer_index is not None and not 0 <= answer_index < len(choices):
            raise FormatError(path, f"{answer_index} is not an index into {len(choices)} choices", where, "correct_choice_idx")
        samples.append(
            QASample(
                question_id=get(q, "question_id", (str, int), path, where),
                image_id=image_id,
                image_path=_aokvqa_image(image_root, q_split, image_id),
                question=get(q, "question", str, path, where),
                answers=get_str_list(q, "direct_answers", path, where, default=[]),
                choices=choices,
                answer_index=answer_index,
                meta={
                    "split": q_split,
                    "difficult_direct_answer": q.get("difficult_direct_answer"),
                    "rationales": q.get("rationales", []),
                },
            )
        )
    return samples


def read_scienceqa(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    split: str | None = None,
    image_only: bool = False,
    splits_file: str | os.PathLike | None = None,
) -> list[QASample]:
    """Read ScienceQA problems; `path` is `problems.json` or the folder holding it and `pid_splits.json`.

    With `split`, the problem ids come from `pid_splits.json` (when present, else each problem's
    `split` field), in that file's order. `answers` = [correct choice text].
    """
    path = Path(path)
    if path.is_dir():
        found = find_files(path, {"problems": ["problems.json"], "splits": ["pid_splits.json"]}, "ScienceQA")
        path, splits_file = found["problems"], found["splits"]
    elif splits_file is None and (path.parent / "pid_splits.json").is_file():
        splits_file = path.parent / "pid_splits.json"
    problems = read_json(path)
    if not isinstance(problems, dict):
        raise FormatError(path, f"expected an object keyed by problem id, got {type(problems).__name__}")
    pids = list(problems)
    if split is not None and splits_file is not None:
        splits = read_json(splits_file)
        pids = [str(p) for p in get(splits, split, list, splits_file, None)]
        for pid in pids:
            if pid not in problems:
                raise FormatError(splits_file, f"problem {pid!r} is not in {Path(path).name}", None, split)
    samples = []
    for pid in pids:
        problem = problems[pid]
        where = f"problem {pid}"
        p_split = get(problem, "split", str, path, where)
        if split is not None and splits_file is None and p_split != split:
            continue
        choices = get_str_list(problem, "choices", path, where)
        answer = get(problem, "answer", int, path, where)
        if not 0 <= answer < len(choices):
            raise FormatError(path, f"{answer} is not an index into {len(choices)} choices", where, "answer")
        image = get(problem, "image", (str, type(None)), path, where, default=None)
        if image_only and not image:
            continue
        samples.append(
            QASample(
                question_id=pid,
                image_id=pid if image else None,
                image_path=resolve(image_root, "images", p_split, pid, image) if image else None,
                question=get(problem, "question", str, path, where),
                answers=[choices[answer]],
                choices=choices,
                answer_index=answer,
                meta={k: problem.get(k) for k in ("hint", "subject", "task", "grade", "lecture")} | {"split": p_split},
            )
        )
    return samples
