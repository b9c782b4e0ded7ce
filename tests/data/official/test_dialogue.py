import json

import pytest

from data.layouts import write_shikra
from lyrics.data.official import FormatError, read_shikra_rd


def test_shikra_layout_placeholders(tmp_path):
    files = write_shikra(tmp_path)
    samples = read_shikra_rd(files["file"], files["images"])
    first = samples[0]
    assert first.boxes[1] == (120.0, 20.0, 180.0, 80.0)
    assert first.question.text == "What is the object <boxes> next to?" and first.question.boxes_seq == [[0]]
    assert first.question.phrases == [None] and first.answer.boxes_seq == [[1]]
    assert first.image_path == files["images"] / "1.jpg"
    assert samples[1].answer.boxes_seq == [[0, 1]]


def test_shikra_release_phrase_markers_and_cot_boxes(tmp_path):
    files = write_shikra(tmp_path, release_style=True)
    sample = read_shikra_rd(files["file"])[0]
    assert sample.question.text == "What is the man<boxes> holding?" and sample.question.phrases == ["the man"]
    assert sample.answer.boxes_seq == [] and sample.cot.boxes_seq == [[0], [1]]
    assert sample.cot.phrases == ["The man", "the dog"]


def test_shikra_seq_must_match_placeholders(tmp_path):
    path = tmp_path / "bad.jsonl"
    row = {"img_path": "1.jpg", "boxes": [[0, 0, 1, 1]], "question": "a <boxes> b <boxes>", "question_boxes_seq": [[0]],
           "answer": "x", "answer_boxes_seq": []}
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(FormatError, match=r"line 1: field 'question_boxes_seq': 1 entries for 2"):
        read_shikra_rd(path)
    row["question_boxes_seq"] = [[0], [3]]
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(FormatError, match="indices into 1 boxes"):
        read_shikra_rd(path)
