"""Every benchmark metric, scored the way its official tool scores it (docs/design.md, "Metric conventions").

One import point for the evaluation code; each metric lives in a short module of its own:

=====================================  ==============================  ====================================
benchmark                              function                        official convention followed
=====================================  ==============================  ====================================
VQAv2, OK-VQA, VizWiz, TextVQA         `vqa_accuracy`, `score_vqa`     GT-Vision-Lab/VQA `vqaEval.py`
GQA, OCR-VQA                           `exact_match`,                  lower-case, strip, drop final "."
                                       `score_exact_match`
ScienceQA-IMG, A-OKVQA (MC)            `multiple_choice`,              letter or option text -> index
                                       `score_multiple_choice`
RefCOCO / + / g (REC)                  `grounding_hit`,                first box in the text, IoU >= 0.5
                                       `score_grounding`
POPE                                   `parse_pope_answer`,            AoiDragon/POPE `evaluate.py`
                                       `score_pope`, `score_pope_files`
MME                                    `parse_mme_answer`,             MME `eval_tool/calculation.py`
                                       `score_mme`, `read_mme_results`
COCO / NoCaps / Flickr30K captions     `cider`                         pycocoevalcap `Cider` + PTBTokenizer
=====================================  ==============================  ====================================

Units follow the official tools: VQA accuracy in percent rounded to 2 decimals at split level (a
fraction per question), POPE / exact match / multiple choice / REC as fractions, MME subtask scores
in 0..200, CIDEr on pycocoevalcap's scale (x100 for papers). All functions are pure Python over
plain data (CIDEr shells out to Java through pycocoevalcap).
"""

from __future__ import annotations

from lyrics.eval.captioning import CiderResult, JavaNotFoundError, cider
from lyrics.eval.choice import ChoiceResult, MultipleChoiceScore, multiple_choice, parse_choice, score_multiple_choice
from lyrics.eval.grounding import IOU_THRESHOLD, GroundingHit, GroundingScore, grounding_hit, score_grounding
from lyrics.eval.vqa import (
    VQAResult,
    evalai_clean_answer,
    exact_match,
    normalize_exact,
    normalize_vqa_answer,
    score_exact_match,
    score_vqa,
    vqa_accuracy,
)
from lyrics.eval.yesno import (
    MME_COGNITION,
    MME_PAIRINGS,
    MME_PERCEPTION,
    MMEIncompleteError,
    MMEResult,
    MMERow,
    MMESubtaskResult,
    POPEResult,
    mme_result_lines,
    parse_mme_answer,
    parse_pope_answer,
    read_jsonl,
    read_mme_results,
    score_mme,
    score_mme_subtask,
    score_pope,
    score_pope_files,
)

__all__ = [
    "IOU_THRESHOLD",
    "MME_COGNITION",
    "MME_PAIRINGS",
    "MME_PERCEPTION",
    "ChoiceResult",
    "CiderResult",
    "GroundingHit",
    "GroundingScore",
    "JavaNotFoundError",
    "MMEIncompleteError",
    "MMEResult",
    "MMERow",
    "MMESubtaskResult",
    "MultipleChoiceScore",
    "POPEResult",
    "VQAResult",
    "cider",
    "evalai_clean_answer",
    "exact_match",
    "grounding_hit",
    "mme_result_lines",
    "multiple_choice",
    "normalize_exact",
    "normalize_vqa_answer",
    "parse_choice",
    "parse_mme_answer",
    "parse_pope_answer",
    "read_jsonl",
    "read_mme_results",
    "score_exact_match",
    "score_grounding",
    "score_mme",
    "score_mme_subtask",
    "score_multiple_choice",
    "score_pope",
    "score_pope_files",
    "score_vqa",
    "vqa_accuracy",
]
