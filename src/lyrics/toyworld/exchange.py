"""The quickstart's last step: a short conversation with the trained model about one test image.

The questions are the kinds `lyrics chat` users ask first (colour, existence, count, "where is the
X?"), chosen from the image's ground truth so that each has one right answer; they go through the
same `LyricsPipeline` as `lyrics chat` and `lyrics serve` (the checkpoint's own live refiner, no
feature store), and the picture of the last answer (refiner objects and the answer's box) is saved
beside the report.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class Exchange:
    """One question to the model, its answer, and what the toy world says is true."""

    question: str
    answer: str
    truth: str
    boxes: list[list[float]]


def pick_image(world: Path, split: str = "test") -> dict[str, Any]:
    """The first image of `split` with at least three objects, one of whose shapes appears once."""
    manifest = json.loads((world / "world.json").read_text())
    for image in manifest["images"]:
        if image["split"] != split or len(image["objects"]) < 3:
            continue
        shapes = Counter(obj["shape"] for obj in image["objects"])
        if any(shapes[obj["shape"]] == 1 for obj in image["objects"]):
            return image
    raise ValueError(f"{world}: no {split} image with three or more objects and a shape that appears once")


def questions_for(image: dict[str, Any], colours: list[str]) -> list[tuple[str, str]]:
    """(question, true answer) pairs about `image`: a colour, a present and an absent object, the
    object count, and where one object is (its pixel box)."""
    objects = image["objects"]
    shapes = Counter(obj["shape"] for obj in objects)
    unique = next(obj for obj in objects if shapes[obj["shape"]] == 1)
    present = {obj["tag"] for obj in objects}
    absent = next(f"{c} {unique['shape']}" for c in colours if f"{c} {unique['shape']}" not in present)
    # the model writes boxes as the refiner's text does: corners in thousandths of the image (int1000)
    x1, y1, x2, y2 = (min(999, round(v * 1000)) for v in unique["box_norm"])
    return [
        (f"What color is the {unique['shape']}?", unique["colour"]),
        (f"Is there a {unique['tag']} in the image?", "yes"),
        (f"Is there a {absent} in the image?", "no"),
        ("How many objects are there?", str(len(objects))),
        (f"Where is the {unique['tag']}? Give its coordinates.", f"({x1},{y1}),({x2},{y2})"),
    ]


def run_exchange(checkpoint: str | Path, world: str | Path, out: str | Path, autocast: Any = None) -> list[Exchange]:
    """Ask `checkpoint` the `questions_for` a test image; write `out/chat.json` and `out/chat.png`."""
    import torch

    from lyrics.atomic import atomic_write_text
    from lyrics.inference.drawing import draw_result, save_picture
    from lyrics.inference.pipeline import LyricsPipeline
    from lyrics.toyworld.spec import COLOURS

    world, out = Path(world), Path(out)
    image = pick_image(world)
    pipeline = LyricsPipeline.from_pretrained(checkpoint)
    picture = pipeline.load_image(str(world / image["file_name"]))
    asked = questions_for(image, list(COLOURS))
    with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        results = pipeline([picture] * len(asked), [q for q, _ in asked], max_new_tokens=48)
    exchanges = [Exchange(q, r.text, truth, [[round(v, 1) for v in b.box] for b in r.boxes]) for (q, truth), r in zip(asked, results)]
    save_picture(draw_result(picture, results[-1]), out / "chat.png")
    record = {"image": image["file_name"], "exchanges": [asdict(e) for e in exchanges]}
    atomic_write_text(out / "chat.json", json.dumps(record, indent=1))
    return exchanges
