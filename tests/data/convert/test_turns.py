import pytest

from lyrics.data.convert.turns import merge_turns
from lyrics.data.records import InstructionRecord


def qa(i, image="a.jpg", boxes=()):
    conv = [{"from": "human", "value": f"<image>\nQuestion {i}?"}, {"from": "gpt", "value": f"answer {i}"}]
    return InstructionRecord(f"q{i}", image, "vqa", conv, list(boxes), refiner=image, source="vqav2", meta={"question_id": i})


def test_questions_of_one_image_become_conversations_of_at_most_n_turns():
    records = [qa(0), qa(1, "b.jpg"), qa(2), qa(3), qa(4), qa(5, "b.jpg"), qa(6, "c.jpg", boxes=[(0, 0, 1, 1)])]
    merged = merge_turns(records, max_turns=3, seed=0)
    # a.jpg's four questions: 3 + 1; b.jpg's two: 2; the record with a box is kept as it is
    assert [r.image for r in merged] == ["a.jpg", "a.jpg", "b.jpg", "c.jpg"]
    assert merged[-1] is records[-1]
    first = merged[0]
    humans = [t["value"] for t in first.conversations if t["from"] == "human"]
    answers = [t["value"] for t in first.conversations if t["from"] == "gpt"]
    assert len(humans) == 3 and humans[0].startswith("<image>\n") and all("<image>" not in h for h in humans[1:])
    # every question keeps its own answer, and none is lost or repeated
    pairs = {(h.replace("<image>\n", ""), a) for r in merged[:3] for h, a in zip(*[[t["value"] for t in r.conversations if t["from"] == w] for w in ("human", "gpt")])}
    assert pairs == {(f"Question {i}?", f"answer {i}") for i in range(6)}
    assert sorted(i for r in merged[:3] for i in r.meta["merged"]) == [f"q{i}" for i in range(6)]


def test_the_order_is_seeded_and_one_turn_changes_nothing():
    records = [qa(i) for i in range(8)]
    assert merge_turns(records, 4, seed=1) == merge_turns(records, 4, seed=1)
    assert [r.id for r in merge_turns(records, 4, seed=1)] != [r.id for r in merge_turns(records, 4, seed=2)]
    assert merge_turns(records, 1) == records
    with pytest.raises(ValueError, match="at least 1"):
        merge_turns(records, 0)
