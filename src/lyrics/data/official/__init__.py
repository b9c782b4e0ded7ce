"""Readers for the public releases' own annotation layouts (one module per format family).

Each reader returns a list of typed samples (`lyrics.data.official.samples`), resolves image paths
against the `image_root` the caller gives (the exact rule is in each module's docstring), accepts
either the annotation file or the folder holding it under its official name, and fails with:

* `FormatError` (a `ValueError`) naming the file, the record and the field of malformed input;
* `MissingFilesError` (a `FileNotFoundError`) listing every expected file missing from a folder.

| format                          | reader                         | sample        |
|---------------------------------|--------------------------------|---------------|
| COCO captions, NoCaps           | `read_coco_captions`           | CaptionSample |
| Karpathy (Flickr30K, COCO)      | `read_karpathy`                | CaptionSample |
| VQAv2, OK-VQA                   | `read_vqa`                     | QASample      |
| GQA                             | `read_gqa`                     | QASample      |
| TextVQA                         | `read_textvqa`                 | QASample      |
| VizWiz                          | `read_vizwiz`                  | QASample      |
| OCR-VQA                         | `read_ocrvqa`                  | QASample      |
| A-OKVQA                         | `read_aokvqa`                  | QASample      |
| ScienceQA (-IMG)                | `read_scienceqa`               | QASample      |
| RefCOCO / RefCOCO+ / RefCOCOg   | `read_refcoco`                 | RefSample     |
| POPE                            | `read_pope`                    | PopeSample    |
| MME (both folder layouts)       | `read_mme`                     | MMESample     |
| LLaVA-Bench (In-the-Wild)       | `read_llava_bench`             | LLaVABenchSample |
| Alpaca                          | `read_alpaca`                  | TextSample    |
| Shikra GPT4Gen-RD               | `read_shikra_rd`               | DialogueSample|
"""

from lyrics.data.official.captions import read_coco_captions, read_karpathy
from lyrics.data.official.common import FormatError, MissingFilesError
from lyrics.data.official.dialogue import read_shikra_rd
from lyrics.data.official.llava_bench import read_llava_bench
from lyrics.data.official.mme import COGNITION, PERCEPTION, SUBTASKS as MME_SUBTASKS, read_mme, read_mme_subtask
from lyrics.data.official.multichoice import read_aokvqa, read_scienceqa
from lyrics.data.official.pope import POPE_VARIANTS, read_pope
from lyrics.data.official.refcoco import CocoInstances, RestrictedUnpickler, load_builtins_pickle, read_coco_instances, read_refcoco
from lyrics.data.official.samples import (
    BoxedText,
    CaptionSample,
    DialogueSample,
    LLaVABenchSample,
    MMESample,
    PopeSample,
    QASample,
    RefSample,
    TextSample,
)
from lyrics.data.official.text import read_alpaca
from lyrics.data.official.vqa import coco_image_name, read_gqa, read_ocrvqa, read_textvqa, read_vizwiz, read_vqa

__all__ = [
    "FormatError",
    "MissingFilesError",
    "BoxedText",
    "CaptionSample",
    "DialogueSample",
    "LLaVABenchSample",
    "MMESample",
    "PopeSample",
    "QASample",
    "RefSample",
    "TextSample",
    "CocoInstances",
    "RestrictedUnpickler",
    "load_builtins_pickle",
    "coco_image_name",
    "read_coco_captions",
    "read_karpathy",
    "read_vqa",
    "read_gqa",
    "read_textvqa",
    "read_vizwiz",
    "read_ocrvqa",
    "read_aokvqa",
    "read_scienceqa",
    "read_coco_instances",
    "read_refcoco",
    "read_pope",
    "read_mme",
    "read_mme_subtask",
    "read_llava_bench",
    "read_alpaca",
    "read_shikra_rd",
    "POPE_VARIANTS",
    "MME_SUBTASKS",
    "PERCEPTION",
    "COGNITION",
]
