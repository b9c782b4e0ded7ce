"""Shikra GPT4Gen-RD -> referential-dialogue records (Table 10, "Referential Dialogue").

Boxes are normalised by the image size (read from the image header; a missing image skips the
sample). Each `<boxes>` placeholder becomes `<box:i>` placeholders for its boxes; a placeholder whose
phrase is known (`<ph_st>the man<ph_ed>`) becomes the tagged unit `<T>the man</T><box:i>`.

The question goes through a template with `{Tag & Bbox}` and `{Question}` (chosen per sample): the
question's first referred object fills `{Tag & Bbox}` and its inline placeholder is removed from the
question (the phrase stays), e.g.::

    "What is <ph_st>the man<ph_ed> holding?"  ->
    "<image>\\nFocus on the object <T>the man</T><box:0> in the image, and answer the question: What is the man holding?."

A question without boxes is used as is. The answer keeps its boxes inline; `answer="auto"` uses the
chain-of-thought answer (`cot_with_ans`) when it carries the boxes and the plain answer does not
(Shikra's release), else `answer`.
"""

from __future__ import annotations

from pathlib import Path

from lyrics.data.convert.common import Conversion, ConvertOptions, relative_image, single_turn
from lyrics.data.images import ImageError, image_size
from lyrics.data.official.dialogue import BOXES_PLACEHOLDER, read_shikra_rd
from lyrics.data.official.samples import BoxedText
from lyrics.data.records import placeholder
from lyrics.refiner.spatial import box_from_pixels, clean_tag

TASK = "referential_dialogue"


def _unit(phrase: str | None, group: list[int]) -> str:
    boxes = "".join(placeholder(i) for i in group)
    tag = clean_tag(phrase) if phrase else ""
    return f"<T>{tag}</T>{boxes}" if tag else boxes


def render_boxed(text: BoxedText, drop_first: bool = False) -> str:
    """`text` with each placeholder as record placeholders (tagged when the phrase is known).

    `drop_first` removes the first placeholder (and the space before it), keeping its phrase as
    plain text: the template's `{Tag & Bbox}` slot carries that object instead.
    """
    segments = text.text.split(BOXES_PLACEHOLDER)
    out = []
    for k, segment in enumerate(segments[:-1]):
        phrase = text.phrases[k]
        if k == 0 and drop_first:
            out.append(segment.rstrip() if not phrase else segment)
            continue
        stripped = segment.rstrip()
        if phrase and stripped.endswith(phrase) and clean_tag(phrase):
            out.append(stripped[: len(stripped) - len(phrase)] + _unit(phrase, text.boxes_seq[k]))
        else:
            out.append(segment + _unit(None, text.boxes_seq[k]))
    out.append(segments[-1])
    return "".join(out)


def convert_shikra_rd(inputs: list[Path], opts: ConvertOptions, answer: str = "auto") -> Conversion:
    if answer not in ("auto", "answer", "cot"):
        raise ValueError(f"answer must be 'auto', 'answer' or 'cot', got {answer!r}")
    bank = opts.bank
    with_question = [t for t in bank.templates(TASK) if "question" in t.slots and "tag_bbox" in t.slots]
    out = Conversion()
    for path in inputs:
        source = "shikra_rd"
        for sample in read_shikra_rd(path, opts.images):
            try:
                width, height = image_size(sample.image_path)
            except ImageError as exc:
                out.skipped.append(f"{path} sample {sample.index}: {exc}")
                continue
            boxes = []
            for x1, y1, x2, y2 in sample.boxes:
                boxes.append(box_from_pixels((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)), width, height))
            q = sample.question
            meta = {"index": sample.index}
            if q.boxes_seq:
                template = bank.choose(TASK, sample.index, opts.seed, opts.template, candidates=with_question)
                if "question" not in template.slots:
                    raise ValueError(f"referential-dialogue template {template.index} has no {{Question}} slot: {template.text!r}")
                prompt = template.fill(tag_bbox=_unit(q.phrases[0], q.boxes_seq[0]), question=render_boxed(q, drop_first=True).strip())
                meta["template"] = template.index
            else:
                prompt = "<image>\n" + render_boxed(q).strip()
            use_cot = answer == "cot" or (
                answer == "auto" and sample.cot is not None and sample.cot.boxes_seq and not sample.answer.boxes_seq
            )
            if use_cot and sample.cot is None:
                out.skipped.append(f"{path} sample {sample.index}: no cot_with_ans")
                continue
            reply = render_boxed(sample.cot if use_cot else sample.answer).strip()
            image = relative_image(sample.image_path, opts.images)
            rid = f"{source}-{Path(path).stem}-{sample.index}"
            out.records.append(single_turn(rid, image, TASK, prompt, reply, source, meta, boxes))
    return out
