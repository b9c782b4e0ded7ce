"""Helpers for the evaluation tests: a scripted predictor, benchmark folders in the official layouts
(mostly the data engineer's `data.layouts` writers), toy pictures, and a tiny Lyrics checkpoint whose
refiner is the toy one."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from data import layouts
from PIL import Image, ImageDraw

from lyrics.eval.predictor import Prediction, Prompt
from lyrics.toyworld import spec as toyspec


class Killed(RuntimeError):
    """Raised by `ScriptedPredictor(fail_after=...)`: a process killed mid-run."""


class ScriptedPredictor:
    """Returns given answers (it tests the harness, not a model).

    Args:
        answers: sample id -> answer, or a function of the `Prompt`.
        default: the answer for ids not in `answers`.
        fail_after: raise `Killed` when asked for more than this many batches.
    """

    def __init__(self, answers: Mapping[str, str] | Callable[[Prompt], str] | None = None, default: str = "",
                 coordinate_format: str = "int1000", fail_after: int | None = None):  # fmt: skip
        self.answers = answers or {}
        self.default = default
        self.coordinate_format = coordinate_format
        self.fail_after = fail_after
        self.batches: list[list[Prompt]] = []

    @property
    def seen(self) -> list[str]:
        return [p.key for batch in self.batches for p in batch]

    def predict(self, prompts):
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise Killed("killed")
        self.batches.append(list(prompts))
        if callable(self.answers):
            return [Prediction(self.answers(p)) for p in prompts]
        return [Prediction(self.answers.get(p.key, self.default)) for p in prompts]


def write_nocaps(root: Path) -> dict:
    images = [{"id": 5, "file_name": "0013ea2087020901.jpg", "width": 64, "height": 48}]
    annotations = [{"id": 1, "image_id": 5, "caption": "a red square"}, {"id": 2, "image_id": 5, "caption": "a square that is red"}]
    layouts.dump(root / "nocaps_val_4500_captions.json", {"info": {}, "licenses": [], "images": images, "annotations": annotations})
    layouts.write_image(root / "val" / images[0]["file_name"])
    return {"root": root}


def write_vqav2_testdev(root: Path) -> dict:
    """Questions only, as the test-dev release (no annotations); images in test2015/."""
    questions = [{"image_id": 8, "question": "What is it?", "question_id": 80}, {"image_id": 8, "question": "Is it red?", "question_id": 81}]
    layouts.dump(root / "v2_OpenEnded_mscoco_test-dev2015_questions.json",
                 {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "test-dev2015", "questions": questions})  # fmt: skip
    layouts.write_image(root / "test2015" / "COCO_test2015_000000000008.jpg")
    return {"root": root}


WRITERS = {
    "coco-captions": lambda root: layouts.write_coco_captions(root),
    "nocaps": write_nocaps,
    "flickr30k": lambda root: layouts.write_karpathy(root),
    "vqav2": lambda root: layouts.write_vqav2(root),
    "okvqa": lambda root: layouts.write_vqav2(root, okvqa=True),
    "vizwiz": layouts.write_vizwiz,
    "textvqa": layouts.write_textvqa,
    "gqa": layouts.write_gqa,
    "ocrvqa": layouts.write_ocrvqa,
    "scienceqa-img": layouts.write_scienceqa,
    "refcoco": lambda root: layouts.write_refcoco(root),
    "refcoco+": lambda root: layouts.write_refcoco(root, name="refcoco+"),
    "refcocog": lambda root: layouts.write_refcoco(root, name="refcocog", split_by="umd"),
    "pope": layouts.write_pope,
    "mme": lambda root: layouts.write_mme(root),
    "llava-bench": lambda root: layouts.write_llava_bench(root),
}
# The split each tiny folder is read with, and the folder images are under (None = the data folder).
SPLITS = {"coco-captions": "toyval", "vqav2": "toyval", "okvqa": "toyval", "refcoco": "train", "refcoco+": "train", "refcocog": "train"}
IMAGE_ROOTS = {"refcoco": "coco", "refcoco+": "coco", "refcocog": "coco"}


def write_benchmark(name: str, root: Path) -> tuple[Path, Path | None, str | None]:
    """Write the tiny `name` folder; returns (data, images, split) for `EvalConfig`."""
    WRITERS[name](root)
    images = root / IMAGE_ROOTS[name] if name in IMAGE_ROOTS else None
    return root, images, SPLITS.get(name)


# --- toy pictures and a tiny checkpoint ------------------------------------------------------------
TOY_REFINER = {
    "refiner_config.tagger": "toy",
    "refiner_config.detector": "toy",
    "refiner_config.segmenter": "toy",
    "refiner_config.detection_feature_size": 24,
    "refiner_config.box_feature_size": 4,
    "refiner_config.segmentation_feature_size": 8,
}


def toy_scene(index: int, size: int = 96) -> Image.Image:
    """1-3 flat shapes in the toy colours on the toy background (the toy refiner finds them)."""
    colours = list(toyspec.COLOURS.values())
    image = Image.new("RGB", (size, size), toyspec.BACKGROUND_RGB)
    draw = ImageDraw.Draw(image)
    for k in range(1 + index % 3):
        colour = colours[(index + 2 * k) % len(colours)]
        x, y = 6 + (index * 17 + k * 31) % (size - 36), 6 + (index * 13 + k * 29) % (size - 36)
        r = 10 + (index + k) % 3 * 3
        shape = draw.rectangle if (index + k) % 2 else draw.ellipse
        shape((x, y, x + 2 * r, y + 2 * r), fill=colour)
    return image


def write_toy_pope(root: Path, images: int = 3) -> Path:
    """A POPE folder (random split) over toy scenes: two questions per image."""
    (root / "val2014").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(images):
        name = f"COCO_val2014_{i + 1:012d}.jpg"
        toy_scene(i).save(root / "val2014" / name, quality=95)
        for k, (what, label) in enumerate((("red circle", "yes"), ("blue star", "no"))):
            rows.append({"question_id": 10 * i + k, "image": name, "text": f"Is there a {what} in the image?", "label": label})
    (root / "coco_pope_random.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@functools.lru_cache(maxsize=None)
def shared_checkpoint() -> Path:
    """One tiny checkpoint per test session (several test modules use it); removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="lyrics-eval-ckpt-"))
    atexit.register(shutil.rmtree, root, True)
    return build_checkpoint(root)


def build_checkpoint(root: Path, seed: int = 0) -> Path:
    """A tiny stage-2 checkpoint saved in the real format, with the toy refiner (sizes 12/4/8)."""
    import tiny
    import torch

    from lyrics.models.conditional_generation import LyricsForConditionalGeneration
    from lyrics.models.processing import (
        LyricsProcessor,
        ProcessorConfig,
        load_image_processor,
    )

    tokenizer = tiny.llm_tokenizer()
    tiny.save_llm(root / "llm", tokenizer, seed=seed)
    tiny.save_vision(root / "vision", seed=seed)
    config = tiny.lyrics_config(**TOY_REFINER)
    proc = LyricsProcessor(
        tiny.llm_tokenizer(), ProcessorConfig(num_image_tokens=config.num_image_tokens, max_length=1024), load_image_processor(root / "vision")
    )
    torch.manual_seed(seed)
    model = LyricsForConditionalGeneration.from_components(config, root / "llm", root / "vision", processor=proc)
    model.enable_lora()
    with torch.no_grad():  # LoRA B starts at zero; random values make the adapter matter
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    model.save_pretrained(root / "ckpt", processor=proc)
    return root / "ckpt"
