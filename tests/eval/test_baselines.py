"""Trivial baselines produce predictions the metrics accept, with hand-computed scores."""

import shutil

import pytest

from lyrics.eval import baselines as b
from lyrics.eval import metrics as m


def test_majority_answer_per_question_type():
    pairs = (
        [("what color", "red")] * 3
        + [("what color", "blue")] * 2
        + [("how many", "3")] * 2
        + [("how many", "2")] * 2  # tie: the smallest string wins, whatever the order
        + [(None, "yes")]
    )
    model = b.MajorityAnswer.fit(pairs)
    assert model.by_type == {"what color": "red", "how many": "2"}
    assert model.fallback == "red"  # red 3, blue 2, "2" 2, "3" 2, yes 1
    assert model.predict("is there") == "red" and model.predict(None) == "red"
    assert b.MajorityAnswer.fit(reversed(pairs)) == model
    with pytest.raises(ValueError, match="at least one"):
        b.MajorityAnswer.fit([])


def test_majority_answer_feeds_score_vqa():
    train = [
        {"question_id": 1, "question_type": "what color", "multiple_choice_answer": "red", "answers": []},
        {"question_id": 2, "question_type": "what color", "answers": ["blue"] * 6 + ["red"] * 4},
        {"question_id": 3, "question_type": "what color", "multiple_choice_answer": "red"},
        {"question_id": 4, "question_type": "is there", "answers": [{"answer": "yes"}] * 10},
    ]
    pairs = b.vqa_training_pairs(train)
    assert pairs == [("what color", "red"), ("what color", "blue"), ("what color", "red"), ("is there", "yes")]
    model = b.MajorityAnswer.fit(pairs)
    test = [
        {"question_id": 10, "question_type": "what color", "answer_type": "other", "answers": ["red"] * 10},
        {"question_id": 11, "question_type": "what color", "answer_type": "other", "answers": ["green"] * 9 + ["red"]},
        {"question_id": 12, "question_type": "is there", "answer_type": "yes/no", "answers": ["no"] * 10},
    ]
    predictions = model.predictions(test)
    assert predictions == {10: "red", 11: "red", 12: "yes"}
    result = m.score_vqa(test, predictions)
    assert result.per_question_type == {"what color": 65.0, "is there": 0.0}  # (1.0 + 0.3) / 2
    assert result.overall == round(100 * 1.3 / 3, 2)


def test_always_yes_on_pope():
    labels = ["yes", "yes", "yes", "no", "no"]
    r = m.score_pope(labels, b.always_yes(len(labels)))
    assert (r.accuracy, r.precision, r.recall, r.yes_ratio) == (0.6, 0.6, 1.0, 1.0)
    assert r.f1 == pytest.approx(2 * 0.6 / 1.6)  # 0.75


@pytest.mark.parametrize("fmt", ["int1000", "unit3"])
def test_centre_box_on_rec(fmt):
    texts = b.box_predictions(2, b.CENTRE_BOX, fmt)
    assert texts[0] == {"int1000": "(250,250),(750,750)", "unit3": "(0.250,0.250),(0.750,0.750)"}[fmt]
    score = m.score_grounding(texts, [(0.25, 0.25, 0.75, 0.75), (0.0, 0.0, 0.2, 0.2)], fmt=fmt)
    assert score.accuracy == 0.5 and score.parse_failure_rate == 0.0


def test_mean_training_box():
    box = b.mean_box([(0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0), (0.25, 0.25, 0.75, 0.75)])
    assert box == pytest.approx((0.25, 0.25, 0.75, 0.75))
    assert m.grounding_hit(b.box_predictions(1, box)[0], (0.25, 0.25, 0.75, 0.75)).correct
    with pytest.raises(ValueError, match="at least one"):
        b.mean_box([])


def test_most_common_caption():
    captions = ["a red circle", "two blue squares", "a red circle", "two blue squares", "a green star"]
    assert b.most_common_caption(captions) == "a red circle"  # tie with "two blue squares": smallest wins
    assert b.constant_caption_predictions(captions, [7, 8]) == {7: "a red circle", 8: "a red circle"}


@pytest.mark.skipif(shutil.which("java") is None, reason="CIDEr's PTBTokenizer needs Java")
def test_constant_caption_scores_below_matching_captions():
    references = {1: ["a red circle", "one red circle"], 2: ["two blue squares"], 3: ["a green star", "green star"]}
    train = ["a red circle", "a red circle", "a green star"]
    constant = m.cider(references, b.constant_caption_predictions(train, references))
    matching = m.cider(references, {1: "a red circle", 2: "two blue squares", 3: "a green star"})
    assert constant.per_image[1] > 0.0 and constant.per_image[2] == 0.0
    assert matching.score > constant.score
