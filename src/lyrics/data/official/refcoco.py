"""Referring expressions: RefCOCO, RefCOCO+ and RefCOCOg (the `refer` toolkit layout).

One folder per dataset::

    refcoco/refs(unc).p   refcoco+/refs(unc).p   refcocog/refs(umd).p   (+ refs(google).p)
    <dataset>/instances.json

`refs(*).p` is a Python pickle of a list of builtins-only dicts::

    {"ref_id": int, "ann_id": int, "image_id": int, "split": "train|val|testA|testB|test",
     "sentences": [{"sent": str, "raw": str, "tokens": [str], "sent_id": int}],
     "sent_ids": [int], "category_id": int, "file_name": str}

It is read with `RestrictedUnpickler`, whose `find_class` refuses every global: a pickle that tries
to build any object (the way malicious pickles run code) fails with a FormatError instead of
executing anything. `instances.json` is COCO instances format; `bbox` is [x, y, w, h] in pixels.

image: `image_root / train2014 / <instances file_name>` (COCO_train2014_{image_id:012d}.jpg);
image_root is the COCO root. Splits: RefCOCO / RefCOCO+ val, testA, testB; RefCOCOg (umd) val, test.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lyrics.data.official.common import FormatError, find_files, get, read_json, resolve
from lyrics.data.official.samples import PixelBox, RefSample

# The split-by variant each dataset is evaluated with (refs(unc).p, refs(umd).p).
DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for data made only of builtins (dict, list, str, int, float, bool, None).

    `find_class` is the only way a pickle can reach code; refusing every global means loading can
    never construct objects or call functions, whatever the file contains.
    """

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed (builtins-only pickle)")


def load_builtins_pickle(path: str | os.PathLike) -> Any:
    """Load a builtins-only pickle (Python 2 byte strings are decoded as UTF-8)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="utf-8", errors="replace").load()
    except pickle.UnpicklingError as exc:
        raise FormatError(path, f"refused or invalid pickle: {exc}") from None
    except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise FormatError(path, f"not a valid pickle: {type(exc).__name__}: {exc}") from None


@dataclass
class CocoInstances:
    """The parts of a COCO instances file the referring-expression readers need."""

    path: Path
    images: dict[int, dict[str, Any]]
    boxes: dict[int, tuple[int, PixelBox]]  # ann_id -> (image_id, pixel xyxy)
    categories: dict[int, str]
    by_image: dict[int, list[int]] = field(default_factory=dict)  # image_id -> ann_ids, file order


def read_coco_instances(path: str | os.PathLike) -> CocoInstances:
    path = Path(path)
    data = read_json(path)
    images = {}
    for i, image in enumerate(get(data, "images", list, path, None)):
        where = f"images[{i}]"
        images[get(image, "id", int, path, where)] = {
            "file_name": get(image, "file_name", str, path, where),
            "width": get(image, "width", int, path, where),
            "height": get(image, "height", int, path, where),
        }
    boxes: dict[int, tuple[int, PixelBox]] = {}
    by_image: dict[int, list[int]] = {}
    for i, ann in enumerate(get(data, "annotations", list, path, None)):
        where = f"annotations[{i}]"
        bbox = get(ann, "bbox", list, path, where)
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            raise FormatError(path, f"expected [x, y, w, h] numbers, got {bbox!r}", where, "bbox")
        x, y, w, h = (float(v) for v in bbox)
        ann_id, image_id = get(ann, "id", int, path, where), get(ann, "image_id", int, path, where)
        boxes[ann_id] = (image_id, (x, y, x + w, y + h))
        by_image.setdefault(image_id, []).append(ann_id)
    categories = {
        get(c, "id", int, path, f"categories[{i}]"): get(c, "name", str, path, f"categories[{i}]")
        for i, c in enumerate(get(data, "categories", list, path, None, default=[]))
    }
    return CocoInstances(path, images, boxes, categories, by_image)


def refcoco_files(folder: Path, split_by: str | None = None) -> dict[str, Path]:
    """The `refs` pickle and `instances` file of a dataset folder (MissingFilesError lists what lacks)."""
    split_by = split_by or DEFAULT_SPLIT_BY.get(folder.name.lower())
    refs = [f"refs({split_by}).p"] if split_by else ["refs(*).p"]
    return find_files(folder, {"refs": refs, "instances": ["instances.json"]}, "RefCOCO")


def read_refcoco(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    split: str | None = None,
    split_by: str | None = None,
    instances: str | os.PathLike | CocoInstances | None = None,
) -> list[RefSample]:
    """Read a RefCOCO-family dataset folder (or a `refs(*).p` file plus `instances`).

    Returns one `RefSample` per referred object (all its expressions in `sentences`, the `sent`
    strings), restricted to `split` when given.
    """
    path = Path(path)
    if path.is_dir():
        found = refcoco_files(path, split_by)
        path = found["refs"]
        instances = instances if instances is not None else found["instances"]
    if instances is None:
        candidate = path.parent / "instances.json"
        if not candidate.is_file():
            raise FileNotFoundError(f"{path}: no instances.json beside it; pass instances=")
        instances = candidate
    inst = instances if isinstance(instances, CocoInstances) else read_coco_instances(instances)
    refs = load_builtins_pickle(path)
    if not isinstance(refs, list):
        raise FormatError(path, f"expected a list of refs, got {type(refs).__name__}")
    samples = []
    for i, ref in enumerate(refs):
        where = f"refs[{i}]"
        ref_split = get(ref, "split", str, path, where)
        if split is not None and ref_split != split:
            continue
        ref_id = get(ref, "ref_id", int, path, where)
        where = f"refs[{i}] (ref_id={ref_id})"
        ann_id = get(ref, "ann_id", int, path, where)
        image_id = get(ref, "image_id", int, path, where)
        if ann_id not in inst.boxes:
            raise FormatError(path, f"ann_id {ann_id} is not in {inst.path.name}", where, "ann_id")
        if image_id not in inst.images:
            raise FormatError(path, f"image_id {image_id} is not in {inst.path.name}", where, "image_id")
        sentences = [
            get(s, "sent", str, path, f"{where}.sentences[{j}]") for j, s in enumerate(get(ref, "sentences", list, path, where))
        ]
        image = inst.images[image_id]
        category_id = ref.get("category_id")
        samples.append(
            RefSample(
                ref_id=ref_id,
                ann_id=ann_id,
                image_id=image_id,
                image_path=resolve(image_root, "train2014", image["file_name"]),
                sentences=sentences,
                box_xyxy=inst.boxes[ann_id][1],
                width=image["width"],
                height=image["height"],
                split=ref_split,
                category=inst.categories.get(category_id),
                meta={"category_id": category_id, "sent_ids": ref.get("sent_ids", [])},
            )
        )
    return samples
