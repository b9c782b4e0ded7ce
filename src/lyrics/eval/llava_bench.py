"""LLaVA-Bench scored as LLaVA's `eval_gpt_review_bench.py` and `summarize_gpt_review.py` score it.

Protocol (facts of those scripts, reproduced here in our own code):

* Each question gets one judge request: the system message `LLAVA_SYSTEM_PROMPT`, then a user
  message made of `[Context]` (the image's caption from context.jsonl, see `JudgeConfig.context`),
  `[Question]`, the GPT-4 reference answer as `[<role> 1]`, the model's answer as `[<role> 2]`,
  each closed by `[End of <role> N]`, and `[System]` with the category's rule prompt
  (rule.json, key "llava_bench_" + category); temperature 0.2, at most 1024 tokens.
* The reply's first line holds the two scores: commas become spaces, the line is split on single
  spaces, and exactly two fields that read as numbers are the scores (reference, model); anything
  else (even "8, 9", which leaves an empty field) is recorded as (-1, -1) and, as in LLaVA, still
  averaged in. `unparsed` counts them: a number with unparsed reviews should be looked at.
* Per category (and over all questions) both scores are averaged, each mean rounded to 3
  decimals, and the relative score is round(model mean / reference mean * 100, 1): the numbers of
  Table 9 ("LLaVA DD / Conv / CR" = detail / conv / complex).

Reviews go to a JSON-lines file, one line per question, with LLaVA's review fields (`id`,
`question_id`, `answer1_id`, `answer2_id`, `category`, `content`, `tuple`, so LLaVA's
summarize_gpt_review.py reads it too) plus the judge model and a hash of the exact prompt. A rerun
reads it and asks only for questions without a review; a review made with another prompt or judge
model is refused, never mixed in. Each line is written in one append, flushed and fsync'ed; a torn
last line (a kill mid-write) is cut off on the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lyrics.eval.judge import Judge, JudgeConfig, JudgeError

CATEGORIES = ("conv", "detail", "complex")  # Table 9: Conv, DD (detailed description), CR (complex reasoning)
UNPARSED = (-1.0, -1.0)


def context_text(caption: str | Sequence[str], style: str = "llava") -> str:
    """The `[Context]` body: "llava" is `"\\n".join(caption)` as the official script writes it (a
    string caption comes out one character per line); "plain" keeps a string caption whole."""
    if style == "plain" and isinstance(caption, str):
        return caption
    return "\n".join(caption)


def review_prompt(context: str, question: str, reference: str, answer: str, role: str, rule: str) -> str:
    """The judge's user message (the layout of eval_gpt_review_bench.py)."""
    return (
        f"[Context]\n{context}\n\n"
        f"[Question]\n{question}\n\n"
        f"[{role} 1]\n{reference}\n\n[End of {role} 1]\n\n"
        f"[{role} 2]\n{answer}\n\n[End of {role} 2]\n\n"
        f"[System]\n{rule}\n\n"
    )


def parse_scores(review: str) -> tuple[float, float]:
    """(reference score, model score) from the reply's first line, or (-1, -1) as LLaVA records an
    unreadable one: "8 9" and "8,9" read; "8, 9" and "8  9" (an empty field between), "8 9 " and
    "Scores: 8 9" (three fields) do not."""
    fields = review.split("\n")[0].replace(",", " ").split(" ")
    if len(fields) != 2:
        return UNPARSED
    try:
        return float(fields[0]), float(fields[1])
    except ValueError:
        return UNPARSED


def relative_scores(reviews: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """`{category: {"reference", "model", "relative", "count"}}` plus "all", as summarize_gpt_review.py
    computes them: means of the (reference, model) tuples rounded to 3 decimals, relative score =
    round(model / reference * 100, 1). Categories are named without the "llava_bench_" prefix."""
    groups: dict[str, list[Sequence[float]]] = {}
    for review in reviews:
        category = str(review["category"]).removeprefix("llava_bench_")
        groups.setdefault(category, []).append(review["tuple"])
        groups.setdefault("all", []).append(review["tuple"])
    out = {}
    for category, pairs in sorted(groups.items()):
        reference = round(sum(p[0] for p in pairs) / len(pairs), 3)
        model = round(sum(p[1] for p in pairs) / len(pairs), 3)
        relative = round(model / reference * 100, 1) if reference else None  # LLaVA's script divides by zero
        out[category] = {"reference": reference, "model": model, "relative": relative, "count": len(pairs)}
    return out


# ----------------------------------------------------------------------------------- reviews file
def _read_reviews(path: Path) -> dict[str, dict[str, Any]]:
    """Complete review lines by question id; a torn last line is cut off the file."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    body, _, tail = data.rpartition(b"\n")
    if tail:
        with open(path, "r+b") as handle:
            handle.truncate(len(data) - len(tail))
    reviews = {}
    for number, line in enumerate(body.split(b"\n") if body else [], start=1):
        if line.strip():
            try:
                record = json.loads(line)
                reviews[str(record["question_id"])] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{path}:{number}: not a review line (delete the file to ask the judge again)") from None
    return reviews


def _append(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "ab") as handle:
        handle.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def judge_answers(
    items: Sequence[Mapping[str, Any]],
    answers: Mapping[str, str],
    config: JudgeConfig,
    reviews_path: str | os.PathLike,
    transport: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Review every item's answer (reusing the reviews already in `reviews_path`); returns the
    reviews in item order.

    Args:
        items: per question `question_id`, `category`, `question`, `caption`, `reference`,
            `reference_id`, `role`, `rule`, and `answer_id` (the model answer's id).
        answers: answer_id -> the model's answer text.
        config: the judge; `transport` goes to `Judge` (tests).
        progress: called with (reviewed, total) after each new review.
    """
    path = Path(reviews_path)
    done = _read_reviews(path)
    reviews, judge = [], None
    try:
        for position, item in enumerate(items, start=1):
            context = context_text(item["caption"], config.context)
            prompt = review_prompt(context, item["question"], item["reference"], answers[item["answer_id"]], item["role"], item["rule"])
            digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
            old = done.get(str(item["question_id"]))
            if old is not None:
                if old.get("prompt_sha256") != digest or old.get("judge_model") != config.model:
                    raise JudgeError(
                        f"{path} holds a review of question {item['question_id']} made with another prompt or judge model "
                        f"({old.get('judge_model')!r}); delete it, or use another --out, to judge again"
                    )
                reviews.append(old)
                continue
            if judge is None:
                judge = Judge(config, transport)
            content = judge.ask(prompt)
            record = {
                "id": position, "question_id": item["question_id"], "answer1_id": item["reference_id"],
                "answer2_id": item["answer_id"], "category": "llava_bench_" + item["category"], "content": content,
                "tuple": list(parse_scores(content)), "judge_model": config.model, "prompt_sha256": digest,
            }  # fmt: skip
            _append(path, record)
            reviews.append(record)
            if progress is not None:
                progress(position, len(items))
    finally:
        if judge is not None:
            judge.close()
    return reviews


def judged_metrics(reviews: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The flat metrics of a judged split: relative score per category and overall (percent, 1
    decimal, as LLaVA prints them; `primary` is the overall one), both mean scores, and how many
    replies had no readable scores."""
    out: dict[str, Any] = {}
    for category, s in relative_scores(reviews).items():
        out[f"relative[{category}]"] = s["relative"]
        out[f"model_score[{category}]"] = s["model"]
        out[f"reference_score[{category}]"] = s["reference"]
    out["unparsed"] = sum(1 for r in reviews if tuple(r["tuple"]) == UNPARSED)
    return {"primary": out.get("relative[all]"), **out}


def answer_rows(question_ids: Sequence[Any], questions: Sequence[str], texts: Sequence[str], model: str) -> list[dict[str, Any]]:
    """The model's answers in the layout of LLaVA's model_vqa.py output (`question_id`, `prompt`,
    `text`, `answer_id`, `model_id`, `metadata`), for LLaVA's own review scripts."""
    name = Path(model).name or model
    return [
        {"question_id": qid, "prompt": q, "text": t, "answer_id": str(qid), "model_id": name, "metadata": {}}
        for qid, q, t in zip(question_ids, questions, texts)
    ]
