"""Caption annotations: COCO captions format (also NoCaps) and Karpathy splits (Flickr30K, COCO).

COCO captions, e.g. `annotations/captions_val2017.json`::

    {"info": {...}, "licenses": [],
     "images": [{"id": int, "file_name": str, "width": int, "height": int}],
     "annotations": [{"id": int, "image_id": int, "caption": str}]}

Image path: `image_root / file_name` (image_root is the image folder, e.g. `val2017/`). Images with
no caption are kept with `captions=[]` (test splits are captioned by the model).

Karpathy splits, `dataset_flickr30k.json` / `dataset_coco.json`::

    {"dataset": "flickr30k",
     "images": [{"filename": str, "imgid": int, "split": "train|val|test|restval",
                 "sentences": [{"raw": str, "tokens": [str], "imgid": int, "sentid": int}],
                 "sentids": [int]}]}

Image path: `image_root / [filepath /] filename` (COCO's Karpathy file has a `filepath` such as
`val2014`; Flickr30K's does not, its image root is `flickr30k-images/`).
"""

from __future__ import annotations

import os
from pathlib import Path

from lyrics.data.official.common import FormatError, find_files, get, read_json, resolve
from lyrics.data.official.samples import CaptionSample


def read_coco_captions(
    path: str | os.PathLike, image_root: str | os.PathLike | None = None, split: str | None = None
) -> list[CaptionSample]:
    """Read a COCO-format caption file (or find `[annotations/]captions_<split>.json` in a folder)."""
    path = Path(path)
    if path.is_dir():
        name = f"captions_{split or '*'}.json"
        path = find_files(path, {"captions": [name, f"annotations/{name}"]}, "COCO captions")["captions"]
    data = read_json(path)
    images = get(data, "images", list, path, None)
    annotations = get(data, "annotations", list, path, None, default=[])
    samples: dict[int, CaptionSample] = {}
    for i, image in enumerate(images):
        where = f"images[{i}]"
        image_id = get(image, "id", (int, str), path, where)
        file_name = get(image, "file_name", str, path, where)
        samples[image_id] = CaptionSample(
            image_id=image_id,
            image_path=resolve(image_root, file_name),
            captions=[],
            width=get(image, "width", int, path, where, default=None),
            height=get(image, "height", int, path, where, default=None),
            split=split,
        )
    for i, ann in enumerate(annotations):
        where = f"annotations[{i}]"
        image_id = get(ann, "image_id", (int, str), path, where)
        caption = get(ann, "caption", str, path, where)
        if image_id not in samples:
            raise FormatError(path, f"image_id {image_id!r} is not in 'images'", where, "image_id")
        samples[image_id].captions.append(caption.strip())
        samples[image_id].meta.setdefault("annotation_ids", []).append(ann.get("id"))
    return list(samples.values())


def read_karpathy(
    path: str | os.PathLike, image_root: str | os.PathLike | None = None, split: str | None = None
) -> list[CaptionSample]:
    """Read a Karpathy split file (or find `dataset_*.json` in a folder); keep only `split` if given."""
    path = Path(path)
    if path.is_dir():
        path = find_files(path, {"karpathy": ["dataset_*.json"]}, "Karpathy split")["karpathy"]
    data = read_json(path)
    images = get(data, "images", list, path, None)
    dataset = data.get("dataset")
    samples = []
    for i, image in enumerate(images):
        where = f"images[{i}]"
        image_split = get(image, "split", str, path, where)
        if split is not None and image_split != split:
            continue
        filename = get(image, "filename", str, path, where)
        filepath = get(image, "filepath", str, path, where, default="")
        sentences = get(image, "sentences", list, path, where)
        captions = [get(s, "raw", str, path, f"{where}.sentences[{j}]").strip() for j, s in enumerate(sentences)]
        samples.append(
            CaptionSample(
                image_id=get(image, "imgid", int, path, where),
                image_path=resolve(image_root, filepath, filename) if filepath else resolve(image_root, filename),
                captions=captions,
                split=image_split,
                meta={"dataset": dataset, "filename": filename, **({"cocoid": image["cocoid"]} if "cocoid" in image else {})},
            )
        )
    return samples
