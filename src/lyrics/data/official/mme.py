"""MME: 14 yes/no subtasks, one folder each under a root folder.

Perception: existence, count, position, color, posters, celebrity, scene, landmark, artwork, OCR.
Cognition: commonsense_reasoning, numerical_calculation, text_translation, code_reasoning.

Two folder layouts occur (both accepted for every subtask; the presence of `questions_answers_YN/`
decides)::

    (a) <subtask>/images/<name>.jpg  +  <subtask>/questions_answers_YN/<name>.txt
    (b) <subtask>/<name>.jpg|png     +  <subtask>/<name>.txt

Each txt holds one question per line, `question<TAB>answer`, answer "Yes" or "No" (two per image,
one of each).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lyrics.data.official.common import FormatError, MissingFilesError
from lyrics.data.official.samples import MMESample

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
SUBTASKS = PERCEPTION + COGNITION
IMAGE_EXTENSIONS = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")


def _find_image(folder: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        candidate = folder / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _read_questions(txt: Path) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise FormatError(txt, "expected 'question<TAB>answer'", f"line {number}", "answer")
        question, answer = line.rsplit("\t", 1)
        answer = answer.strip()
        if answer not in ("Yes", "No"):
            raise FormatError(txt, f"must be 'Yes' or 'No', got {answer!r}", f"line {number}", "answer")
        pairs.append((question.strip(), answer))
    return pairs


def read_mme_subtask(folder: str | os.PathLike, subtask: str | None = None) -> list[MMESample]:
    """Read one subtask folder in either layout, in file-name order."""
    folder = Path(folder)
    subtask = subtask or folder.name
    category = "cognition" if subtask in COGNITION else "perception"
    if (folder / "questions_answers_YN").is_dir():
        txt_dir, image_dir = folder / "questions_answers_YN", folder / "images"
    else:
        txt_dir = image_dir = folder
    samples = []
    for txt in sorted(txt_dir.glob("*.txt")):
        image = _find_image(image_dir, txt.stem)
        if image is None:
            raise FormatError(txt, f"no image {txt.stem}.jpg or .png in {image_dir}", None, "image")
        for question, answer in _read_questions(txt):
            samples.append(MMESample(subtask, category, image.name, image, question, answer))
    return samples


def read_mme(root: str | os.PathLike, subtasks: Sequence[str] | None = None) -> list[MMESample]:
    """Read the MME root folder; every subtask in `subtasks` (default: all 14) must be present."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: folder not found")
    subtasks = tuple(subtasks) if subtasks is not None else SUBTASKS
    unknown = [s for s in subtasks if s not in SUBTASKS]
    if unknown:
        raise ValueError(f"unknown MME subtasks {unknown}; known: {list(SUBTASKS)}")
    missing = [f"{s}/" for s in subtasks if not (root / s).is_dir()]
    if missing:
        raise MissingFilesError(root, missing, "MME")
    return [sample for s in subtasks for sample in read_mme_subtask(root / s, s)]
