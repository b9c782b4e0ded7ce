"""MME scored as the official `eval_tool/calculation.py` scores it: consecutive-line pairs for acc+,
the first-4-characters parser, tabs inside answers, odd line counts and incomplete subtask sets."""

import pytest

from lyrics.eval import metrics as m
from lyrics.eval.yesno import MME_COGNITION, MME_PERCEPTION

# A1, B1, A2, B2: the images' questions interleaved. Both of A's answers are right, both of B's wrong.
INTERLEAVED = [
    ("A.png", "Is there a cat?", "Yes", "Yes"),
    ("B.png", "Is there a cat?", "Yes", "No"),
    ("A.png", "Is there a dog?", "No", "No"),
    ("B.png", "Is there a dog?", "No", "Yes"),
]


def test_interleaved_rows_pair_by_line_as_the_official_tool():
    # Lines (A1, B1) and (A2, B2) are the pairs: neither is all right -> acc 2/4, acc+ 0/2 -> 50.
    official = m.score_mme_subtask(INTERLEAVED)
    assert (official.acc, official.acc_plus, official.images) == (0.5, 0.0, 2)
    assert official.score == pytest.approx(50.0)
    # Pairing by image name (the option) counts image A: acc 2/4, acc+ 1/2 -> 100.
    by_name = m.score_mme_subtask(INTERLEAVED, pairing="image")
    assert (by_name.acc_plus, by_name.images, by_name.score) == (0.5, 2, pytest.approx(100.0))


def test_an_image_with_four_questions_makes_two_line_pairs():
    rows = [("C.png", f"q{i}", gold, pred) for i, (gold, pred) in enumerate([("yes", "yes"), ("no", "no"), ("yes", "yes"), ("no", "yes")])]
    lines = m.score_mme_subtask(rows)
    assert (lines.images, lines.acc, lines.acc_plus, lines.score) == (2, 0.75, 0.5, pytest.approx(125.0))
    by_name = m.score_mme_subtask(rows, pairing="image")  # one image, not all four right
    assert (by_name.images, by_name.acc_plus, by_name.score) == (1, 0.0, pytest.approx(75.0))


def test_answers_that_are_neither_yes_nor_no_are_wrong_and_counted():
    rows = [
        ("D.png", "q1", "Yes", "The image shows a cat."),  # first 4 chars "the " -> other
        ("D.png", "q2", "No", "Not at all."),  # "not " holds "no" -> no (right)
        ("E.png", "q1", "Yes", " yes"),  # " yes" -> yes (right)
        ("E.png", "q2", "No", ""),  # empty -> other
    ]
    r = m.score_mme_subtask(rows)
    assert (r.other, r.acc, r.acc_plus) == (2, 0.5, 0.0)


def test_result_file_with_a_tab_inside_an_answer(tmp_path):
    (tmp_path / "color.txt").write_text("F.png\tIs it red?\tYes\tYes\tit is red\nF.png\tIs it blue?\tNo\tNo\n")
    rows = m.read_mme_results(tmp_path, names=["color"])["color"]
    assert rows[0] == m.MMERow("F.png", "Is it red?", "Yes", "Yes\tit is red")
    assert m.score_mme_subtask(rows).score == pytest.approx(200.0)


def test_odd_line_count_and_blank_lines_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"MME color: 3 lines, an odd number"):
        m.score_mme_subtask(INTERLEAVED[:3], "color")
    assert m.score_mme_subtask(INTERLEAVED[:3], pairing="image").images == 2  # by name it is defined
    (tmp_path / "scene.txt").write_text("G.png\tq\tYes\tYes\n\nG.png\tq2\tNo\tNo\n")
    with pytest.raises(ValueError, match=r"scene\.txt:2: blank line"):
        m.read_mme_results(tmp_path, names=["scene"])


def _write_all(folder, names, rows):
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / f"{name}.txt").write_text(m.mme_result_lines([m.MMERow(*r) for r in rows]))


def test_a_missing_perception_file_is_refused_by_name(tmp_path):
    right = [("H.png", "q1", "Yes", "Yes"), ("H.png", "q2", "No", "No")]
    kept = [n for n in MME_PERCEPTION if n not in ("OCR", "artwork")]
    _write_all(tmp_path, kept + list(MME_COGNITION), right)
    with pytest.raises(m.MMEIncompleteError, match=r"perception has 8 of its 10 subtasks; missing: artwork\.txt, OCR\.txt") as info:
        m.read_mme_results(tmp_path)
    assert "cognition" not in str(info.value)
    rows = m.read_mme_results(tmp_path, names=kept)
    with pytest.raises(m.MMEIncompleteError, match="artwork.txt, OCR.txt"):
        m.score_mme(rows)

    _write_all(tmp_path, ["OCR", "artwork", "extra_task"], right)
    full = m.score_mme(m.read_mme_results(tmp_path))
    assert (full.perception, full.cognition, full.total) == (2000.0, 800.0, 2800.0)  # extra_task summed nowhere


def test_written_result_files_read_back_to_the_same_scores(tmp_path):
    rows = [m.MMERow("I.png", "q1", "Yes", "Yes,\tit is\nred"), m.MMERow("I.png", "q2", "No", "no\r\n")]
    (tmp_path / "color.txt").write_text(m.mme_result_lines(rows))
    back = m.read_mme_results(tmp_path, names=["color"])["color"]
    assert [r.prediction for r in back] == ["Yes, it is red", "no"]
    assert m.score_mme_subtask(back) == m.score_mme_subtask(rows)


def test_unknown_pairing_is_refused():
    with pytest.raises(ValueError, match="pairing must be one of"):
        m.score_mme_subtask(INTERLEAVED, pairing="names")


# ---------------------------------------------------------------------------------- through the runner
def _run(tmp_path, answer, **kw):
    from evalkit import ScriptedPredictor, write_benchmark

    from lyrics.eval.runner import EvalConfig, run_eval

    data, _, _ = write_benchmark("mme", tmp_path / "data")
    return run_eval(ScriptedPredictor(answer), EvalConfig("mme", data, out=tmp_path / "out", model="scripted", **kw))


def test_the_run_writes_official_result_files_that_score_the_same(tmp_path):
    outcome = _run(tmp_path, lambda p: "Yes\tsure" if "cat" not in p.turns[-1]["value"] else "I see no cat")
    folder = outcome.run_dir / "mme_results"
    assert sorted(p.stem for p in folder.glob("*.txt")) == sorted(MME_PERCEPTION + MME_COGNITION)
    first = (folder / "existence.txt").read_text().splitlines()[0].split("\t")
    assert first[2:] == ["Yes", "Yes sure"]  # gold as the question file has it; tab flattened
    again = m.score_mme(m.read_mme_results(folder))
    metrics = outcome.results["metrics"]
    assert (metrics["perception"], metrics["cognition"]) == (again.perception, again.cognition)
    assert metrics["perception"] == 10 * 50.0 and metrics["other"] == 14  # "I see no cat" is neither: wrong
    assert outcome.results["mme_pairing"] == "lines"


def test_a_limited_run_reports_subtasks_but_no_group_sum(tmp_path):
    outcome = _run(tmp_path, lambda p: "Yes", limit=4)
    metrics = outcome.results["metrics"]
    assert "perception" not in metrics and metrics["primary"] is None
    assert set(k for k in metrics if k.startswith("score[")) == {"score[existence]", "score[count]"}
    single = _run(tmp_path / "one", lambda p: "Yes", split="OCR")
    assert single.results["metrics"]["primary"] == single.results["metrics"]["score[OCR]"] == 50.0
