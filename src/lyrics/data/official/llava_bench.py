"""LLaVA-Bench (In-the-Wild): 24 images, 60 open questions in three categories, scored by a judge LLM
against text-only GPT-4 reference answers (Table 9's LLaVA columns: conversation, detailed
description, complex reasoning).

The release (the `liuhaotian/llava-bench-in-the-wild` dataset; LLaVA's
`playground/data/eval/llava-bench-in-the-wild/`) is one folder::

    questions.jsonl     {"question_id": 0, "image": "001.jpg", "text": "...", "category": "conv"}
    context.jsonl       {"id": "001", "image": "001.jpg", "caption": "..."}   # the judge's view of the image
    answers_gpt4.jsonl  {"question_id": 0, "text": "...", "answer_id": "...", "model_id": "gpt-4-0314", ...}
    rule.json           {"llava_bench_conv": {"role": "Assistant", "prompt": "..."}, ...}
    images/001.jpg ...

`rule.json` is LLaVA's `llava/eval/table/rule.json` (the judge's instructions per category, looked
up as "llava_bench_" + category); copy it into the folder when the download lacks it. The judge
prompts are read from these files, never written into this code, so a corrected release is used
as it is. image: `image_root / <image>`.
"""

from __future__ import annotations

import os
from pathlib import Path

from lyrics.data.official.common import FormatError, find_files, get, read_json, read_jsonl, resolve
from lyrics.data.official.samples import LLaVABenchSample

FILES = {"questions": ["questions.jsonl"], "context": ["context.jsonl"], "answers": ["answers_gpt4.jsonl"], "rules": ["rule.json"]}
RULE_PREFIX = "llava_bench_"  # eval_gpt_review_bench.py looks rules up as prefix + question category


def llava_bench_files(folder: str | os.PathLike) -> dict[str, Path]:
    """The four release files in `folder` (`MissingFilesError` naming every missing one)."""
    return find_files(folder, FILES, "LLaVA-Bench")


def read_rules(path: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """`{rule key: (role, prompt)}` of a rule.json."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise FormatError(path, f"expected an object of rules, got {type(data).__name__}")
    return {key: (get(rule, "role", str, path, key), get(rule, "prompt", str, path, key)) for key, rule in data.items()}


def read_llava_bench(
    questions: str | os.PathLike,
    context: str | os.PathLike | None = None,
    answers: str | os.PathLike | None = None,
    rules: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
) -> list[LLaVABenchSample]:
    """Read the benchmark: give the folder (files found by their release names), or the four files.

    Every question needs its image in the context file, a reference answer with its question_id and
    a rule for its category (the official script stops on a missing rule too).
    """
    if Path(questions).is_dir():
        found = llava_bench_files(questions)
        questions, context, answers, rules = found["questions"], found["context"], found["answers"], found["rules"]
    if context is None or answers is None or rules is None:
        raise ValueError("read_llava_bench needs the folder, or the questions, context, answers and rule files")
    captions: dict[str, str | list[str]] = {}
    for number, row in read_jsonl(context):
        caption = get(row, "caption", (str, list), context, f"line {number}")
        captions[get(row, "image", str, context, f"line {number}")] = caption
    references: dict[str, tuple[str, str]] = {}
    for number, row in read_jsonl(answers):
        qid = str(get(row, "question_id", (int, str), answers, f"line {number}"))
        references[qid] = (get(row, "text", str, answers, f"line {number}"), str(row.get("answer_id", qid)))
    rule_table = read_rules(rules)
    samples = []
    for number, row in read_jsonl(questions):
        where = f"line {number}"
        qid = get(row, "question_id", (int, str), questions, where)
        image = get(row, "image", str, questions, where)
        category = get(row, "category", str, questions, where)
        if image not in captions:
            raise FormatError(context, f"no context for image {image!r} (question {qid})")
        if str(qid) not in references:
            raise FormatError(answers, f"no reference answer for question_id {qid!r}")
        key = RULE_PREFIX + category
        if key not in rule_table:
            raise FormatError(rules, f"no rule {key!r} for the category of question {qid} (rules: {sorted(rule_table)})")
        role, prompt = rule_table[key]
        reference, reference_id = references[str(qid)]
        samples.append(
            LLaVABenchSample(
                question_id=qid, image_path=resolve(image_root, image), question=get(row, "text", str, questions, where),
                category=category, caption=captions[image], reference=reference, reference_id=reference_id,
                role=role, rule=prompt,
            )  # fmt: skip
        )
    return samples
