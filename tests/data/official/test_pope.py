import pytest

from data.layouts import write_pope
from lyrics.data.official import FormatError, MissingFilesError, read_pope


def test_pope_file_and_folder(tmp_path):
    files = write_pope(tmp_path)
    one = read_pope(files["files"]["popular"], files["images"])
    assert [(s.question_id, s.label) for s in one] == [(1, "yes"), (2, "no")]
    assert one[0].image_path.is_file() and one[0].meta["variant"] == "popular"
    every = read_pope(tmp_path, files["images"])
    assert [s.meta["variant"] for s in every] == ["random"] * 2 + ["popular"] * 2 + ["adversarial"] * 2


def test_pope_errors(tmp_path):
    files = write_pope(tmp_path)
    files["files"]["random"].write_text('{"question_id": 1, "image": "x.jpg", "text": "?", "label": "maybe"}\n')
    with pytest.raises(FormatError, match=r"line 1: field 'label': must be 'yes' or 'no'"):
        read_pope(files["files"]["random"])
    files["files"]["adversarial"].unlink()
    with pytest.raises(MissingFilesError, match="coco_pope_adversarial.json"):
        read_pope(tmp_path)
