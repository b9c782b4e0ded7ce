"""Open-ended QA -> VQA / text-oriented VQA records (Table 10).

Answer: VQAv2 / OK-VQA use `multiple_choice_answer` (the official most-common answer); A-OKVQA
(direct answers), TextVQA and VizWiz use the most common of their 10 answers; GQA and OCR-VQA their
single answer. TextVQA and OCR-VQA are text-oriented VQA; the rest are VQA. Questions without any
answer (test splits) are skipped and listed.
"""

from __future__ import annotations

from pathlib import Path

from lyrics.data.convert.common import Conversion, ConvertOptions, most_common, relative_image, single_turn
from lyrics.data.official.multichoice import read_aokvqa
from lyrics.data.official.samples import QASample
from lyrics.data.official.vqa import read_gqa, read_ocrvqa, read_textvqa, read_vizwiz, read_vqa


def qa_to_records(samples: list[QASample], opts: ConvertOptions, source: str, task: str) -> Conversion:
    out = Conversion()
    for sample in samples:
        answer = sample.meta.get("multiple_choice_answer") or most_common(sample.answers)
        if not answer:
            out.skipped.append(f"{source} question {sample.question_id}: no answer")
            continue
        template = opts.bank.choose(task, sample.question_id, opts.seed, opts.template)
        prompt = template.fill(image=sample.image_path is not None, question=sample.question.strip())
        meta = {"template": template.index, "question_id": sample.question_id, "answers": sample.answers}
        image = relative_image(sample.image_path, opts.images)
        out.records.append(single_turn(f"{source}-{sample.question_id}", image, task, prompt, answer, source, meta))
    return out


def _vqa_like(source: str):
    def convert(inputs: list[Path], opts: ConvertOptions) -> Conversion:
        if len(inputs) == 2 and not inputs[0].is_dir():
            samples = read_vqa(inputs[0], inputs[1], opts.images)
        elif len(inputs) == 1:
            samples = read_vqa(inputs[0], None, opts.images, split=opts.split, with_answers=True)
        else:
            raise ValueError(f"{source}: give the questions and annotations files, or their folder")
        return qa_to_records(samples, opts, source, "vqa")

    return convert


convert_vqav2 = _vqa_like("vqav2")
convert_okvqa = _vqa_like("okvqa")


def _single_file(reader, source: str, task: str, takes_split: bool = True):
    def convert(inputs: list[Path], opts: ConvertOptions) -> Conversion:
        out = Conversion()
        for path in inputs:
            samples = reader(path, opts.images, opts.split) if takes_split else reader(path, opts.images)
            out.extend(qa_to_records(samples, opts, source, task))
        return out

    return convert


convert_aokvqa = _single_file(read_aokvqa, "aokvqa", "vqa")
convert_gqa = _single_file(read_gqa, "gqa", "vqa")
convert_textvqa = _single_file(read_textvqa, "textvqa", "text_vqa")
convert_vizwiz = _single_file(read_vizwiz, "vizwiz", "vqa")
convert_ocrvqa = _single_file(read_ocrvqa, "ocrvqa", "text_vqa")
