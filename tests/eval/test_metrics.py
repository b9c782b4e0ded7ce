"""Hand-computed cases for every metric in lyrics.eval.metrics (official conventions, docs/design.md, "Metric conventions")."""

import json
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lyrics.eval import metrics as m

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="CIDEr's PTBTokenizer needs Java")


# --------------------------------------------------------------------------------------------- VQA


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Two", "2"),  # number words -> digits, after lower-casing
        ("none", "0"),
        ("a dog", "dog"),  # articles dropped
        ("The Cat!", "cat"),
        ("dont", "don't"),  # contraction table
        ("couldn'tve", "couldn't've"),
        ("don't", "don't"),  # apostrophes are not punctuation
        ("Im", "im"),  # the table's capitalised keys never match lower-cased words
        ("yes.", "yes"),  # a period not followed by a digit goes
        ("3.5", "3.5"),  # a decimal point stays
        ("1,000", "1000"),  # comma between digits: removed, not spaced
        ("t-shirt", "t shirt"),  # a mark touching no space becomes a space
        ("t - shirt", "t shirt"),  # a mark touching a space is deleted (then spaces collapse)
        ("t-shirt, 1,000", "tshirt 1000"),  # a digit comma anywhere switches every mark to deletion
        ("  yes\n", "yes"),
    ],
)
def test_vqa_normalisation_corner_cases(raw, normalised):
    assert m.normalize_vqa_answer(raw) == normalised


@pytest.mark.parametrize(
    ("matching", "expected"),
    [
        # k of 10 annotators gave the predicted answer. Leaving out one of the k matching answers
        # leaves k-1 matches, leaving out one of the 10-k others leaves k; each subset scores
        # min(1, matches/3) and the question scores their mean:
        (0, 0.0),
        (1, (1 * 0 + 9 * (1 / 3)) / 10),  # 0.3
        (2, (2 * (1 / 3) + 8 * (2 / 3)) / 10),  # 0.6
        (3, (3 * (2 / 3) + 7 * 1) / 10),  # 0.9
        (4, 1.0),
        (10, 1.0),
    ],
)
def test_vqa_leave_one_out_average(matching, expected):
    answers = ["2"] * matching + ["3"] * (10 - matching)
    assert m.vqa_accuracy("2", answers) == pytest.approx(expected)
    assert round(expected, 10) == [0.0, 0.3, 0.6, 0.9, 1.0, 1.0][[0, 1, 2, 3, 4, 10].index(matching)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["2", "two", "Two.", "dog", "a dog", "t-shirt"]), min_size=10, max_size=10),
    st.sampled_from(["2", "two", "dog", "the dog", "t shirt", "cat"]),
)
def test_vqa_accuracy_equals_explicit_leave_one_out(answers, prediction):
    # reference: build the 10 subsets of 9 answers explicitly, normalising only on disagreement
    gold, predicted = answers, prediction
    if len(set(answers)) > 1:
        gold = [m.normalize_vqa_answer(a) for a in answers]
        predicted = m.normalize_vqa_answer(prediction)
    subsets = [gold[:i] + gold[i + 1 :] for i in range(10)]
    expected = sum(min(1.0, sum(a == predicted for a in s) / 3) for s in subsets) / 10
    assert m.vqa_accuracy(prediction, answers) == pytest.approx(expected)


def test_vqa_normalises_only_when_annotators_disagree():
    disagree = ["two"] * 3 + ["three"] * 7
    assert m.vqa_accuracy("2", disagree) == pytest.approx(0.9)  # "two" -> "2" on both sides
    assert m.vqa_accuracy("Two.", disagree) == pytest.approx(0.9)
    assert m.vqa_accuracy("dog", ["the dog"] * 9 + ["cat"]) == pytest.approx(1.0)

    agree = ["the dog"] * 10  # unanimous: compared as written, only stripped
    assert m.vqa_accuracy("the dog", agree) == 1.0
    assert m.vqa_accuracy(" the dog\n", agree) == 1.0
    assert m.vqa_accuracy("dog", agree) == 0.0
    assert m.vqa_accuracy("Yes", ["yes"] * 10) == 0.0
    # harnesses clean the model's answer first, which rescues exactly this case
    assert m.evalai_clean_answer("Yes.") == "yes"
    assert m.vqa_accuracy(m.evalai_clean_answer("Yes."), ["yes"] * 10) == 1.0


def test_vqa_accepts_official_answer_dicts():
    answers = [{"answer": "red", "answer_confidence": "yes", "answer_id": i} for i in range(1, 11)]
    assert m.vqa_accuracy("red", answers) == 1.0
    with pytest.raises(ValueError, match="at least one"):
        m.vqa_accuracy("red", [])


def _ann(qid, answers, qtype, atype):
    return {"question_id": qid, "answers": answers, "question_type": qtype, "answer_type": atype}


def test_score_vqa_split_like_the_official_tool():
    annotations = [
        _ann(1, ["red"] * 10, "what color is the", "other"),  # 1.0
        _ann(2, ["red"] + ["blue"] * 9, "what color is the", "other"),  # "red": 1 match -> 0.3
        _ann(3, ["2"] * 2 + ["3"] * 8, "how many", "number"),  # "two" -> "2": 2 matches -> 0.6
    ]
    result = m.score_vqa(annotations, {1: "red", 2: "red", 3: "two"})
    assert result.overall == round(100 * (1.0 + 0.3 + 0.6) / 3, 2) == 63.33
    assert result.per_question_type == {"what color is the": 65.0, "how many": 60.0}
    assert result.per_answer_type == {"other": 65.0, "number": 60.0}
    assert result.per_question[2] == pytest.approx(0.3)
    assert result.count == 3

    assert m.score_vqa([_ann(1, ["yes"] * 10, "is", "yes/no")], {1: "Yes."}).overall == 0.0
    assert m.score_vqa([_ann(1, ["yes"] * 10, "is", "yes/no")], {1: "Yes."}, clean_predictions=True).overall == 100.0


def test_score_vqa_rejects_mismatched_predictions():
    annotations = [_ann(1, ["red"] * 10, "what", "other"), _ann(2, ["red"] * 10, "what", "other")]
    with pytest.raises(ValueError, match="without a prediction"):
        m.score_vqa(annotations, {1: "red"})
    with pytest.raises(ValueError, match="unknown ids"):
        m.score_vqa(annotations, {1: "red", 2: "red", 3: "red"})
    with pytest.raises(ValueError, match="annotation #0"):
        m.score_vqa([{"question_id": 1}], {1: "red"})


def test_exact_match():
    assert m.normalize_exact("  Yes. ") == "yes"
    assert m.exact_match("Yes.", "yes")
    assert m.exact_match("Harry Potter", "harry potter")
    assert not m.exact_match("a dog", "dog")  # no article dropping in exact match
    assert m.exact_match("dog", ["cat", "Dog"])
    assert m.score_exact_match({1: "left.", 2: "Red", 3: "no"}, {1: "left", 2: "red", 3: "yes"}) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="without a prediction"):
        m.score_exact_match({1: "x"}, {1: "x", 2: "y"})


# --------------------------------------------------------------------------------- multiple choice

OPTIONS = ["cat", "dog", "bird"]


@pytest.mark.parametrize(
    ("prediction", "choice"),
    [
        ("B", 1),
        ("(b)", 1),
        ("b.", 1),
        ("C)", 2),
        ("The answer is (B).", 1),
        ("The answer is B.", 1),
        ("Answer: C", 2),
        ("Option B", 1),
        ("the answer is a.", 0),  # a lower-case letter counts at the very end
        ("dog", 1),
        ("Dog.", 1),
        ("B. dog", 1),
        ("(A) cat", 0),
        ("I think it is a dog", 1),  # one option's text inside the answer
        ("the answer is a dog", 1),  # "a" is an article here, not option A
        ("E", None),  # no option E
        ("", None),
        ("cat or dog", None),  # two options: ambiguous
        ("a fish", None),
    ],
)
def test_parse_choice(prediction, choice):
    assert m.parse_choice(prediction, OPTIONS) == choice


def test_parse_choice_prefers_the_longer_contained_option():
    assert m.parse_choice("it is dark red", ["red", "dark red"]) == 1
    assert m.parse_choice("red", ["red", "dark red"]) == 0


def test_multiple_choice_scores():
    assert m.multiple_choice("(B)", OPTIONS, 1) == m.ChoiceResult(choice=1, correct=True)
    assert m.multiple_choice("A", OPTIONS, 1) == m.ChoiceResult(choice=0, correct=False)
    assert m.multiple_choice("no idea", OPTIONS, 1) == m.ChoiceResult(choice=None, correct=False)
    score = m.score_multiple_choice(["B", "cat", "???", "The answer is (C)."], [OPTIONS] * 4, [1, 1, 0, 2])
    assert (score.accuracy, score.unparsed_rate, score.count) == (0.5, 0.25, 4)
    with pytest.raises(ValueError, match="out of range"):
        m.multiple_choice("A", OPTIONS, 3)


# ---------------------------------------------------------------------------------------------- REC

GOLD = (0.1, 0.1, 0.5, 0.5)


def test_grounding_hit_parses_the_first_box():
    hit = m.grounding_hit("<br><T>red circle</T><Bbox>(100,100),(500,500)</Box></br>", GOLD)
    assert hit.correct and hit.iou == pytest.approx(1.0) and hit.box == pytest.approx(GOLD)
    # (0.3, 0.3, 0.7, 0.7): intersection 0.2 * 0.2 = 0.04, union 0.16 + 0.16 - 0.04 = 0.28
    far = m.grounding_hit("(300,300),(700,700)", GOLD)
    assert not far.correct and far.iou == pytest.approx(0.04 / 0.28)
    assert m.grounding_hit("(100,100),(500,500) then (300,300),(700,700)", GOLD).correct
    assert not m.grounding_hit("(300,300),(700,700) then (100,100),(500,500)", GOLD).correct
    assert m.grounding_hit("(0.100,0.100),(0.500,0.500)", GOLD, fmt="unit3").correct


def test_grounding_iou_exactly_half_counts():
    # (0, 0, 0.5, 1) against (0, 0, 0.5, 0.5): intersection 0.25, union 0.5 -> IoU 0.5
    hit = m.grounding_hit("(0.000,0.000),(0.500,1.000)", (0.0, 0.0, 0.5, 0.5), fmt="unit3")
    assert hit.iou == 0.5 and hit.correct


def test_grounding_unparseable_text_is_wrong_and_counted():
    texts = ["(100,100),(500,500)", "a red circle on the left", "(1,2),(3", "(300,300),(700,700)"]
    score = m.score_grounding(texts, [GOLD] * 4)
    assert score.accuracy == 0.25
    assert score.parse_failure_rate == 0.5
    assert [h.box is None for h in score.hits] == [False, True, True, False]
    assert score.mean_iou == pytest.approx((1.0 + 0.04 / 0.28) / 4)
    with pytest.raises(ValueError, match="answer #0"):
        m.score_grounding(["(1,1),(2,2)"], [(0.5, 0.5, 0.1, 0.1)])
    with pytest.raises(ValueError, match="coordinate format"):
        m.grounding_hit("(1,1),(2,2)", GOLD, fmt="pixels")


# --------------------------------------------------------------------------------------------- POPE


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("No, there is not.", "no"),
        ("Yes. But no cat.", "yes"),  # only the first sentence counts
        ("There is not", "no"),
        ("There is no cat in the image", "no"),
        ("no.", "no"),
        ("Yes, there is a cat.", "yes"),
        ("Not really", "yes"),  # official quirk: "Not" (capitalised) is not a no-word
        ("NO", "yes"),  # likewise
        ("nope", "yes"),
        ("", "yes"),
    ],
)
def test_pope_parser(text, parsed):
    assert m.parse_pope_answer(text) == parsed


def test_pope_metrics_by_hand():
    labels = ["yes", "yes", "no", "no", "no"]
    predictions = ["Yes", "No", "No", "Yes, there is", "nope"]  # parsed: yes, no, no, yes, yes
    r = m.score_pope(labels, predictions)
    assert (r.tp, r.fn, r.tn, r.fp) == (1, 1, 1, 2)
    assert r.accuracy == pytest.approx(2 / 5)
    assert r.precision == pytest.approx(1 / 3)
    assert r.recall == pytest.approx(1 / 2)
    assert r.f1 == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))  # 0.4
    assert r.yes_ratio == pytest.approx(3 / 5)
    assert r.count == 5
    # where the official script divides by zero we report 0
    none_yes = m.score_pope(["no", "no"], ["yes", "yes"])
    assert (none_yes.precision, none_yes.recall, none_yes.f1, none_yes.accuracy) == (0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="label #1"):
        m.score_pope(["yes", "Yes"], ["yes", "yes"])


def test_pope_over_whole_files(tmp_path):
    questions = [
        {"question_id": i, "image": f"{i}.png", "text": "Is there a red circle in the image?", "label": label}
        for i, label in enumerate(["yes", "no", "yes", "no"])
    ]
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps(q) for q in questions) + "\n")
    answers = [{"question_id": 3, "text": "No."}, {"question_id": 0, "text": "Yes"}, {"question_id": 1, "text": "Yes"}]
    answers.append({"question_id": 2, "answer": "There is not."})
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(a) for a in answers) + "\n")
    r = m.score_pope_files(tmp_path / "q.jsonl", tmp_path / "a.jsonl")
    assert (r.tp, r.fp, r.tn, r.fn) == (1, 1, 1, 1)
    assert r.accuracy == 0.5 and r.yes_ratio == 0.5

    (tmp_path / "short.jsonl").write_text(json.dumps(answers[0]) + "\n")
    with pytest.raises(ValueError, match="no answer for question_id 0"):
        m.score_pope_files(tmp_path / "q.jsonl", tmp_path / "short.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"question_id": 0}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        m.score_pope_files(tmp_path / "q.jsonl", tmp_path / "bad.jsonl")


# ---------------------------------------------------------------------------------------------- MME


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("Yes", "yes"),
        ("no", "no"),
        ("Yes, it is.", "yes"),
        ("not sure", "no"),  # "no" inside the first 4 characters
        ("Nope", "no"),
        ("There is a cat", "other"),
        ("  yes", "other"),  # not stripped: the first 4 characters are "  ye"
        ("I think yes", "other"),
    ],
)
def test_mme_parser(text, parsed):
    assert m.parse_mme_answer(text) == parsed


MME_ROWS = {
    "existence": [
        ("a.png", "Is there a cat?", "yes", "Yes"),  # right
        ("a.png", "Is there a dog?", "no", "No, there is not."),  # right -> image a counts for acc+
        ("b.png", "Is there a cat?", "yes", "yes"),  # right
        ("b.png", "Is there a dog?", "No", "I think yes"),  # other -> wrong
        ("c.png", "Is there a cat?", "yes", "no"),  # wrong
        ("c.png", "Is there a dog?", "no", "no"),  # right
    ],  # acc 4/6, acc+ 1/3 -> 66.67 + 33.33 = 100
    "count": [("d.png", "Two?", "yes", "yes"), ("d.png", "Three?", "no", "no")],  # 100 + 100
    "code_reasoning": [("e.png", "Prints 1?", "yes", "yes"), ("e.png", "Prints 2?", "no", "yes")],  # 50 + 0
    "toy_extra": [("f.png", "q", "yes", "yes"), ("f.png", "q2", "no", "no")],  # scored, summed nowhere
}


def test_mme_acc_plus_and_scores_by_hand():
    r = m.score_mme(MME_ROWS, allow_partial=True)
    existence = r.subtasks["existence"]
    assert existence.acc == pytest.approx(4 / 6)
    assert existence.acc_plus == pytest.approx(1 / 3)
    assert existence.score == pytest.approx(100.0)
    assert (existence.questions, existence.images, existence.other) == (6, 3, 1)
    assert r.subtasks["count"].score == 200.0
    assert r.subtasks["code_reasoning"].score == 50.0
    assert r.subtasks["toy_extra"].score == 200.0
    # two of ten perception and one of four cognition subtasks: no sums, never partial ones
    assert (r.perception, r.cognition, r.total) == (None, None, None)


def test_mme_reads_official_txt_files(tmp_path):
    for name, rows in MME_ROWS.items():
        (tmp_path / f"{name}.txt").write_text("".join("\t".join(row) + "\n" for row in rows))
    loaded = m.read_mme_results(tmp_path, names=sorted(MME_ROWS))
    assert sorted(loaded) == sorted(MME_ROWS)
    assert loaded["existence"][1] == m.MMERow("a.png", "Is there a dog?", "no", "No, there is not.")
    assert m.score_mme(loaded, allow_partial=True).subtasks["existence"].score == pytest.approx(100.0)

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "color.txt").write_text("a.png\tq\tyes\tyes\na.png\tq2 no\n")
    with pytest.raises(ValueError, match=r"color\.txt:2"):
        m.read_mme_results(tmp_path / "bad", names=["color"])
    with pytest.raises(ValueError, match="odd number"):
        m.score_mme_subtask([("a.png", "q", "yes", "yes")] * 3)
    with pytest.raises(ValueError, match="yes or no"):
        m.score_mme_subtask([("a.png", "q", "maybe", "yes")] * 2)


# -------------------------------------------------------------------------------------------- CIDEr

REFERENCES = {
    1: ["A red circle on the left.", "a red circle", "red circle left of a square"],
    2: ["Two blue squares.", "two blue squares side by side", "blue squares"],
    3: ["A green star at the top.", "one green star", "a small green star"],
}


@needs_java
def test_cider_matches_pycocoevalcap_and_ranks_captions():
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    good = {1: "a red circle on the left", 2: "two blue squares", 3: "a green star"}
    bad = {k: "purple hexagons everywhere" for k in REFERENCES}  # no n-gram shared with any reference
    good_score, bad_score = m.cider(REFERENCES, good), m.cider(REFERENCES, bad)
    assert good_score.score > 1.0 > bad_score.score
    assert bad_score.score == 0.0
    assert good_score.count == 3 and set(good_score.per_image) == {1, 2, 3}

    # the same number pycocoevalcap gives when called directly
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in REFERENCES.items()})
    res = tok.tokenize({k: [{"caption": c}] for k, c in good.items()})
    expected, per_image = Cider().compute_score(gts, res)
    assert good_score.score == pytest.approx(expected)
    assert [good_score.per_image[k] for k in gts] == pytest.approx(list(per_image))


@needs_java
def test_cider_idf_needs_the_whole_split():
    # Alone, an image's n-grams occur in every (i.e. the only) reference set, so every IDF weight is
    # log(1/1) = 0: a perfect caption scores 0. Scoring in batches would distort numbers this way.
    alone = m.cider({1: REFERENCES[1]}, {1: "a red circle on the left"})
    in_split = m.cider(REFERENCES, {1: "a red circle on the left", 2: "two blue squares", 3: "a green star"})
    assert alone.score == 0.0
    assert in_split.per_image[1] > 1.0


def test_cider_errors(monkeypatch):
    with pytest.raises(ValueError, match="1 missing"):
        m.cider(REFERENCES, {1: "x", 2: "y"})
    with pytest.raises(ValueError, match="non-empty list"):
        m.cider({1: "a red circle"}, {1: "x"})
    monkeypatch.setattr("lyrics.eval.captioning.shutil.which", lambda name: None)
    with pytest.raises(m.JavaNotFoundError, match="Java"):
        m.cider(REFERENCES, {1: "x", 2: "y", 3: "z"})
