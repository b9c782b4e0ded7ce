"""Several questions about one image in one conversation (`lyrics convert --max-turns N`).

VQA-style sources ask many short questions about each image, and each single-turn record repeats
the whole prompt (the image tokens and, with the refiner's spatial text in the prompt, tens of
tokens per object) for a one-word answer. LLaVA-1.5 trains on VQAv2 and friends with the questions
of an image merged into multi-turn conversations; so does `merge_turns`: the records of one image
(same image, task and source, no boxes) are cut, in a seeded order, into conversations of at most
`max_turns` question-answer pairs. The first turn keeps its image placeholder; the later ones drop
it (their image is already in the conversation). Each answer carries the loss, so one sample
teaches up to `max_turns` answers for about the cost of one long prompt.

Records with boxes (REC, grounded captioning, referential dialogue) number their `<box:i>`
placeholders within one record and are left as they are, as are records of more than one turn.
"""

from __future__ import annotations

import random
from collections import defaultdict

from lyrics.data.records import InstructionRecord

IMAGE = "<image>"


def _mergeable(record: InstructionRecord) -> bool:
    turns = record.conversations
    return (
        record.image is not None
        and not record.boxes
        and len(turns) == 2
        and turns[0].get("from") == "human"
        and turns[1].get("from") == "gpt"
        and turns[0].get("value", "").count(IMAGE) == 1
    )


def _without_image(text: str) -> str:
    return " ".join(text.replace(IMAGE, " ").split())


def merge_turns(records: list[InstructionRecord], max_turns: int, seed: int = 0) -> list[InstructionRecord]:
    """Records with the single-turn questions of each image merged into conversations of at most
    `max_turns` questions (order of first appearance kept across images; see the module docstring)."""
    if max_turns < 1:
        raise ValueError(f"max_turns must be at least 1, got {max_turns}")
    if max_turns == 1:
        return list(records)
    groups: dict[tuple, list[InstructionRecord]] = defaultdict(list)
    out: list[InstructionRecord | tuple] = []
    for record in records:
        if not _mergeable(record):
            out.append(record)
            continue
        key = (record.image, record.task, record.source, record.refiner)
        if key not in groups:
            out.append(key)  # the merged conversations take the place of the image's first record
        groups[key].append(record)
    merged: list[InstructionRecord] = []
    for item in out:
        if isinstance(item, InstructionRecord):
            merged.append(item)
            continue
        group = list(groups[item])
        random.Random(f"{seed}:{group[0].id}").shuffle(group)
        for start in range(0, len(group), max_turns):
            part = group[start : start + max_turns]
            turns = [dict(part[0].conversations[0]), dict(part[0].conversations[1])]
            for record in part[1:]:
                turns += [{"from": "human", "value": _without_image(record.conversations[0]["value"])}, dict(record.conversations[1])]
            meta = {"merged": [r.id for r in part], "metas": [r.meta for r in part]}
            first = part[0]
            merged.append(InstructionRecord("+".join(r.id for r in part), first.image, first.task, turns, [], first.refiner, first.source, meta))
    return merged
