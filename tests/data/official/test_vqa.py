import json

import pytest

from data.layouts import write_gqa, write_ocrvqa, write_textvqa, write_vizwiz, write_vqav2
from lyrics.data.official import (
    FormatError,
    MissingFilesError,
    coco_image_name,
    read_gqa,
    read_ocrvqa,
    read_textvqa,
    read_vizwiz,
    read_vqa,
)


def test_vqav2_joins_answers_and_applies_the_subtype_image_rule(tmp_path):
    files = write_vqav2(tmp_path, "toyval")
    samples = read_vqa(files["questions"], files["annotations"], tmp_path)
    first = samples[0]
    assert first.question_id == 420 and first.question == "What color is the square?"
    assert first.answers == ["red"] * 8 + ["pink"] * 2
    assert first.meta["multiple_choice_answer"] == "red" and first.meta["answer_type"] == "other"
    assert first.image_path == tmp_path / "toyval" / "COCO_toyval_000000000042.jpg" and first.image_path.is_file()


def test_vqav2_folder_finds_files_and_questions_alone_have_no_answers(tmp_path):
    write_vqav2(tmp_path, "toyval")
    assert read_vqa(tmp_path, image_root=tmp_path)[1].answers == ["1"] * 6 + ["one"] * 4
    assert read_vqa(tmp_path, with_answers=False)[0].answers == []
    (tmp_path / "v2_mscoco_toyval_annotations.json").unlink()
    with pytest.raises(MissingFilesError, match=r"v2_mscoco_\*_annotations.json or mscoco_\*_annotations.json"):
        read_vqa(tmp_path, with_answers=True)


def test_okvqa_file_names(tmp_path):
    write_vqav2(tmp_path, "val2014", okvqa=True)
    samples = read_vqa(tmp_path, image_root=tmp_path, split="val2014")
    assert len(samples) == 3 and samples[0].answers[0] == "red"


def test_test_dev_questions_use_test2015_images():
    assert coco_image_name("test-dev2015", 5) == "test2015/COCO_test2015_000000000005.jpg"
    assert coco_image_name("val2014", 5) == "val2014/COCO_val2014_000000000005.jpg"


def test_vqa_question_without_annotation_is_an_error(tmp_path):
    files = write_vqav2(tmp_path)
    data = json.loads(files["annotations"].read_text())
    data["annotations"].pop()
    files["annotations"].write_text(json.dumps(data))
    with pytest.raises(FormatError, match="no annotation for question_id 70"):
        read_vqa(files["questions"], files["annotations"])


def test_gqa_textvqa_vizwiz(tmp_path):
    gqa = read_gqa(write_gqa(tmp_path / "gqa")["file"], tmp_path / "gqa")
    assert gqa[0].question_id == "201" and gqa[0].answers == ["yes"] and gqa[0].image_path.is_file()
    assert gqa[0].meta["fullAnswer"] == "Yes, the cup is red."
    text = read_textvqa(write_textvqa(tmp_path / "tv")["file"], tmp_path / "tv")
    assert text[0].image_path == tmp_path / "tv" / "train_images" / "abc123.jpg" and len(text[0].answers) == 10
    viz = read_vizwiz(write_vizwiz(tmp_path / "vz")["file"], tmp_path / "vz")
    assert viz[0].image_path == tmp_path / "vz" / "val" / "VizWiz_val_00000000.jpg" and viz[0].image_path.is_file()
    assert viz[0].answers.count("soup") == 6 and viz[0].meta["answerable"] == 1


def test_ocrvqa_one_sample_per_question_split_and_extension(tmp_path):
    files = write_ocrvqa(tmp_path)
    samples = read_ocrvqa(files["file"], tmp_path)
    assert [s.question_id for s in samples] == ["111_0", "111_1", "222_0"]
    assert samples[2].image_path.suffix == ".png" and samples[2].image_path.is_file()
    assert [s.question_id for s in read_ocrvqa(files["file"], tmp_path, split="test")] == ["222_0"]
    assert [s.question_id for s in read_ocrvqa(files["file"], tmp_path, split=1)] == ["111_0", "111_1"]
    with pytest.raises(ValueError, match="OCR-VQA split"):
        read_ocrvqa(files["file"], split="dev")


def test_ocrvqa_mismatched_lengths_name_the_book(tmp_path):
    files = write_ocrvqa(tmp_path)
    data = json.loads(files["file"].read_text())
    data["111"]["answers"].pop()
    files["file"].write_text(json.dumps(data))
    with pytest.raises(FormatError, match=r"id 111: field 'answers': 2 questions but 1 answers"):
        read_ocrvqa(files["file"])
