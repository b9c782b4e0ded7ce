"""Converters from the official dataset formats to instruction records (`lyrics convert`).

| kind          | input(s)                                        | task(s)                         |
|---------------|-------------------------------------------------|---------------------------------|
| coco-captions | captions_*.json (or its folder)                 | captioning                      |
| karpathy      | dataset_*.json                                  | captioning                      |
| vqav2, okvqa  | questions + annotations files, or their folder  | vqa                             |
| aokvqa        | aokvqa_v1p0_*.json                              | vqa (direct answers)            |
| aokvqa-mc     | aokvqa_v1p0_*.json                              | multiple_choice_vqa             |
| gqa           | *_questions.json                                | vqa                             |
| textvqa       | TextVQA_0.5.1_*.json                            | text_vqa                        |
| vizwiz        | <split>.json                                    | vqa                             |
| ocrvqa        | dataset.json                                    | text_vqa                        |
| scienceqa     | problems.json (+ pid_splits.json) or its folder | multiple_choice_vqa             |
| refcoco       | dataset folder (refs(*).p + instances.json)     | rec + grounded_captioning       |
| refcoco-rec   | same                                            | rec                             |
| refcoco-gc    | same                                            | grounded_captioning             |
| shikra-rd     | GPT4Gen-RD *.jsonl                              | referential_dialogue            |
| alpaca        | alpaca_data.json                                | text                            |
| llava         | LLaVA-style record JSON / JSONL                 | as given (validated)            |

Templates come from Table 10 (`lyrics.data.templates`), chosen per sample by `seed` or fixed by
`template`. Records keep box placeholders (`<box:i>`) unless `coordinate_format` is given, in which
case the text is rendered with literal coordinates (for tools that do not read placeholders; such
records are no longer moved by geometric augmentation).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from lyrics.data.convert.captions import convert_coco_captions, convert_karpathy
from lyrics.data.convert.common import Conversion, ConvertOptions
from lyrics.data.convert.dialogue import convert_shikra_rd
from lyrics.data.convert.grounding import convert_refcoco, convert_refcoco_gc, convert_refcoco_rec
from lyrics.data.convert.multichoice import convert_aokvqa_mc, convert_scienceqa
from lyrics.data.convert.text import convert_alpaca, convert_llava
from lyrics.data.convert.vqa import (
    convert_aokvqa,
    convert_gqa,
    convert_ocrvqa,
    convert_okvqa,
    convert_textvqa,
    convert_vizwiz,
    convert_vqav2,
)
from lyrics.data.records import InstructionRecord, render_conversation, save_records
from lyrics.data.templates import TemplateBank
from lyrics.refiner.spatial import COORDINATE_FORMATS

Converter = Callable[[list[Path], ConvertOptions], Conversion]

KINDS: dict[str, Converter] = {
    "coco-captions": convert_coco_captions,
    "karpathy": convert_karpathy,
    "vqav2": convert_vqav2,
    "okvqa": convert_okvqa,
    "aokvqa": convert_aokvqa,
    "aokvqa-mc": convert_aokvqa_mc,
    "gqa": convert_gqa,
    "textvqa": convert_textvqa,
    "vizwiz": convert_vizwiz,
    "ocrvqa": convert_ocrvqa,
    "scienceqa": convert_scienceqa,
    "refcoco": convert_refcoco,
    "refcoco-rec": convert_refcoco_rec,
    "refcoco-gc": convert_refcoco_gc,
    "shikra-rd": convert_shikra_rd,
    "alpaca": convert_alpaca,
    "llava": convert_llava,
}
# Kinds whose format has no split to select (a --split would be silently ignored otherwise).
NO_SPLIT = {"shikra-rd", "alpaca", "llava"}


def convert(
    kind: str,
    inputs: Sequence[str | os.PathLike],
    images: str | os.PathLike | None = None,
    split: str | None = None,
    seed: int = 0,
    template: int | None = None,
    coordinate_format: str | None = None,
    templates: str | os.PathLike | None = None,
    max_turns: int = 1,
) -> Conversion:
    """Convert official-format `inputs` of `kind` (see the module table) into records; with
    `max_turns` > 1 the single-turn questions of one image become conversations of up to that many
    turns (`convert/turns.py`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if split is not None and kind in NO_SPLIT:
        raise ValueError(f"{kind} has no split to select; drop --split")
    if coordinate_format is not None and coordinate_format not in COORDINATE_FORMATS:
        raise ValueError(f"coordinate format must be one of {COORDINATE_FORMATS}, got {coordinate_format!r}")
    if not inputs:
        raise ValueError("give at least one input file or folder")
    paths = [Path(p) for p in inputs]
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path}: input not found")
    bank = TemplateBank.load(templates) if templates is not None else None
    opts = ConvertOptions(images=Path(images) if images is not None else None, split=split, seed=seed, template=template)
    if bank is not None:
        opts.bank = bank
    result = KINDS[kind](paths, opts)
    if coordinate_format is not None:
        result.records = [_render(r, coordinate_format) for r in result.records]
    if max_turns != 1:
        from lyrics.data.convert.turns import merge_turns

        result.records = merge_turns(result.records, max_turns, seed)
    return result


def _render(record: InstructionRecord, fmt: str) -> InstructionRecord:
    turns = render_conversation(record, fmt)
    meta = dict(record.meta, coordinate_format=fmt)
    return InstructionRecord(record.id, record.image, record.task, turns, record.boxes, record.refiner, record.source, meta)


def convert_to_file(kind: str, inputs: Sequence[str | os.PathLike], out: str | os.PathLike, **kwargs) -> Conversion:
    """`convert` and write the records atomically to `out` (JSON list, or JSON lines for .jsonl)."""
    result = convert(kind, inputs, **kwargs)
    save_records(result.records, out)
    return result


__all__ = ["KINDS", "Conversion", "ConvertOptions", "convert", "convert_to_file"]
