"""Multiple-choice QA (A-OKVQA MC, ScienceQA) -> multiple-choice VQA records (Table 10).

Options are lettered as in the paper, `(a) blue (b) yellow (c) pink (d) black`, and the answer is the
correct choice's text. A ScienceQA hint (context) is appended to the question as `Context: <hint>`;
text-only ScienceQA problems become records with `image: null` and no image token.
"""

from __future__ import annotations

from pathlib import Path

from lyrics.data.convert.common import Conversion, ConvertOptions, format_options, relative_image, single_turn
from lyrics.data.official.multichoice import read_aokvqa, read_scienceqa
from lyrics.data.official.samples import QASample

TASK = "multiple_choice_vqa"


def mc_to_records(samples: list[QASample], opts: ConvertOptions, source: str) -> Conversion:
    out = Conversion()
    for sample in samples:
        if sample.answer_index is None or not sample.choices:
            out.skipped.append(f"{source} question {sample.question_id}: no correct choice")
            continue
        question = sample.question.strip()
        hint = (sample.meta.get("hint") or "").strip()
        if hint:
            question = f"{question} Context: {hint}"
        template = opts.bank.choose(TASK, sample.question_id, opts.seed, opts.template)
        prompt = template.fill(image=sample.image_path is not None, question=question, option=format_options(sample.choices))
        meta = {
            "template": template.index,
            "question_id": sample.question_id,
            "choices": sample.choices,
            "answer_index": sample.answer_index,
        }
        image = relative_image(sample.image_path, opts.images)
        answer = sample.choices[sample.answer_index]
        out.records.append(single_turn(f"{source}-{sample.question_id}", image, TASK, prompt, answer, source, meta))
    return out


def convert_aokvqa_mc(inputs: list[Path], opts: ConvertOptions) -> Conversion:
    out = Conversion()
    for path in inputs:
        out.extend(mc_to_records(read_aokvqa(path, opts.images, opts.split), opts, "aokvqa_mc"))
    return out


def convert_scienceqa(inputs: list[Path], opts: ConvertOptions) -> Conversion:
    out = Conversion()
    for path in inputs:
        out.extend(mc_to_records(read_scienceqa(path, opts.images, opts.split), opts, "scienceqa"))
    return out
