"""The toy referential-dialogue score (`lyrics.toyworld.referential`) on a small world."""

import pytest

from lyrics.data.records import render_text
from lyrics.toyworld import referential


@pytest.fixture
def world(tiny_world):
    return tiny_world[0]


def test_prompts_are_built_as_training_builds_them_and_truth_scores_full(world):
    items = referential.turns(world, "test", None)
    assert items and {item["kind"][0] for item in items} <= {"color", "shape", "identity", "neighbour"}
    truth = [render_text(i["record"].conversations[1]["value"], i["record"].boxes, "int1000") for i in items]
    assert referential.score(truth, items, "int1000")["naming_accuracy"] == 100.0
    assert referential.score(truth, items, "int1000")["Acc@0.5"] == 100.0
    # nothing named and no box: zero
    assert referential.score(["I do not know."] * len(items), items, "int1000") == {"naming_accuracy": 0.0, "Acc@0.5": 0.0, "neighbour_Acc@0.5": 0.0}


def test_the_baseline_boxes_the_question_region(world):
    items = referential.turns(world, "test", None)
    scores = referential.score(referential.baseline_answers(world, items, "int1000"), items, "int1000")
    share_not_neighbour = 100.0 * sum(i["kind"][0] != "neighbour" for i in items) / len(items)
    assert scores["Acc@0.5"] == pytest.approx(share_not_neighbour)


def test_named_reads_the_answer_without_its_markup():
    kind, pattern = referential.kind_of("What is next to the red circle <boxes>?")
    assert kind == "neighbour"
    assert referential.named("The blue square <Bbox>(1,2),(3,4)</Box> is next to it.", pattern) == "blue square"
    _, colour = referential.kind_of("What color is the object <boxes>?")
    assert referential.named("The object <Bbox>(1,2),(3,4)</Box> is red .", colour) == "red"
    assert referential.kind_of("How many?") is None
