"""The tiny world both recipe test modules train on: 8 drawn images, COCO captions, a toy-refiner
store, and tiny CLIP / MQ-Former tokenizer / LLaMA checkpoints saved in their real formats."""

import json

import pytest
from PIL import Image, ImageDraw

import tiny
from lyrics.toyworld.spec import COLOURS

SHAPES = [("red", "circle"), ("blue", "square"), ("green", "circle"), ("yellow", "square")]


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    images = root / "images"
    images.mkdir()
    coco = {"images": [], "annotations": []}
    for i in range(8):
        colour, shape = SHAPES[i % 4]
        img = Image.new("RGB", (64, 64), (225, 225, 220))
        draw = ImageDraw.Draw(img)
        box = (8 + 3 * i, 10, 40 + 3 * i, 42)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
        name = f"{i:03d}.png"
        img.save(images / name)
        coco["images"].append({"id": i, "file_name": name, "width": 64, "height": 64})
        coco["annotations"].append({"id": i, "image_id": i, "caption": f"a {colour} {shape}"})
    (root / "captions.json").write_text(json.dumps(coco))

    from lyrics.presets import load_config
    from lyrics.refiner.job import run_job

    refiner = load_config("tiny").refiner_config
    refiner.tagger = "toy"
    run_job(images, root / "store", refiner, progress=False)
    tiny.save_vision(root / "vision")
    tiny.mqformer_tokenizer().save_pretrained(str(root / "mq_tokenizer"))
    tiny.save_llm(root / "llm", tiny.llm_tokenizer())
    return root
