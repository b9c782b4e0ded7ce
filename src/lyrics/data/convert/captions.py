"""Captions -> image-captioning records (Table 10, "Image Captioning"): one record per caption."""

from __future__ import annotations

from pathlib import Path

from lyrics.data.convert.common import Conversion, ConvertOptions, relative_image, single_turn
from lyrics.data.official.captions import read_coco_captions, read_karpathy
from lyrics.data.official.samples import CaptionSample

TASK = "captioning"


def captions_to_records(samples: list[CaptionSample], opts: ConvertOptions, source: str) -> Conversion:
    out = Conversion()
    for sample in samples:
        if not sample.captions:
            out.skipped.append(f"{source} image {sample.image_id}: no caption")
            continue
        image = relative_image(sample.image_path, opts.images)
        for j, caption in enumerate(sample.captions):
            key = f"{sample.image_id}-{j}"
            template = opts.bank.choose(TASK, key, opts.seed, opts.template)
            meta = {"template": template.index, "image_id": sample.image_id}
            out.records.append(single_turn(f"{source}-{key}", image, TASK, template.fill(), caption, source, meta))
    return out


def convert_coco_captions(inputs: list[Path], opts: ConvertOptions) -> Conversion:
    out = Conversion()
    for path in inputs:
        out.extend(captions_to_records(read_coco_captions(path, opts.images, opts.split), opts, "coco_captions"))
    return out


def convert_karpathy(inputs: list[Path], opts: ConvertOptions) -> Conversion:
    out = Conversion()
    for path in inputs:
        samples = read_karpathy(path, opts.images, opts.split)
        dataset = samples[0].meta.get("dataset") if samples else None
        out.extend(captions_to_records(samples, opts, f"karpathy_{dataset or 'captions'}"))
    return out
