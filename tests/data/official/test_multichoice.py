import json

import pytest

from data.layouts import write_aokvqa, write_scienceqa
from lyrics.data.official import FormatError, MissingFilesError, read_aokvqa, read_scienceqa


def test_aokvqa(tmp_path):
    files = write_aokvqa(tmp_path)
    samples = read_aokvqa(files["file"], tmp_path)
    assert samples[0].choices == ["sleeping", "eating", "running", "flying"] and samples[0].answer_index == 2
    assert samples[0].image_path == tmp_path / "val2017" / "000000000005.jpg" and samples[0].image_path.is_file()
    assert len(samples[0].answers) == 10
    data = json.loads(files["file"].read_text())
    data[0]["split"] = "train"  # image ids are unique across COCO 2017: found in val2017 all the same
    files["file"].write_text(json.dumps(data))
    assert read_aokvqa(files["file"], tmp_path)[0].image_path == tmp_path / "val2017" / "000000000005.jpg"
    assert read_aokvqa(files["file"])[0].image_path.as_posix() == "train2017/000000000005.jpg"
    data[1]["correct_choice_idx"] = 4
    files["file"].write_text(json.dumps(data))
    with pytest.raises(FormatError, match=r"\[1\]: field 'correct_choice_idx': 4 is not an index into 4 choices"):
        read_aokvqa(files["file"])


def test_scienceqa_splits_images_and_img_subset(tmp_path):
    write_scienceqa(tmp_path)
    test = read_scienceqa(tmp_path, tmp_path, split="test")
    assert [s.question_id for s in test] == ["1", "2"]
    assert test[0].answers == ["red"] and test[0].answer_index == 1
    assert test[0].image_path == tmp_path / "images" / "test" / "1" / "image.png" and test[0].image_path.is_file()
    assert test[1].image_path is None and test[1].image_id is None
    img = read_scienceqa(tmp_path, tmp_path, split="test", image_only=True)
    assert [s.question_id for s in img] == ["1"]
    assert [s.question_id for s in read_scienceqa(tmp_path / "problems.json", split="train")] == ["3"]


def test_scienceqa_folder_lists_missing_files(tmp_path):
    write_scienceqa(tmp_path)
    (tmp_path / "pid_splits.json").unlink()
    with pytest.raises(MissingFilesError, match="pid_splits.json"):
        read_scienceqa(tmp_path)
