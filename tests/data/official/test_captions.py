import json

import pytest

from data.layouts import write_coco_captions, write_karpathy
from lyrics.data.official import FormatError, MissingFilesError, read_coco_captions, read_karpathy


def test_coco_captions_groups_captions_and_resolves_paths(tmp_path):
    files = write_coco_captions(tmp_path)
    samples = read_coco_captions(files["annotations"], files["images"])
    assert [s.image_id for s in samples] == [1, 2, 3]
    assert samples[0].captions == ["A red square on the left.", "a small red box"]
    assert samples[2].captions == []  # kept: test splits are captioned by the model
    assert samples[0].image_path == files["images"] / "000000000001.jpg" and samples[0].image_path.is_file()
    assert (samples[0].width, samples[0].height) == (64, 48)


def test_coco_captions_from_folder_and_missing_file_listing(tmp_path):
    files = write_coco_captions(tmp_path)
    assert len(read_coco_captions(tmp_path, files["images"], split="toyval")) == 3
    with pytest.raises(MissingFilesError, match=r"captions_val2017.json"):
        read_coco_captions(tmp_path, split="val2017")


def test_coco_captions_bad_field_names_file_record_and_field(tmp_path):
    files = write_coco_captions(tmp_path)
    data = json.loads(files["annotations"].read_text())
    del data["annotations"][1]["caption"]
    files["annotations"].write_text(json.dumps(data))
    with pytest.raises(FormatError) as info:
        read_coco_captions(files["annotations"])
    assert info.value.file == str(files["annotations"]) and info.value.where == "annotations[1]" and info.value.field == "caption"
    data["annotations"][1]["caption"] = "x"
    data["annotations"][1]["image_id"] = 99
    files["annotations"].write_text(json.dumps(data))
    with pytest.raises(FormatError, match="image_id 99 is not in 'images'"):
        read_coco_captions(files["annotations"])


def test_karpathy_split_filter(tmp_path):
    files = write_karpathy(tmp_path)
    test = read_karpathy(files["file"], files["images"], split="test")
    assert [s.image_id for s in test] == [1]
    assert test[0].captions == ["Two people.", "A couple walks."]
    assert test[0].image_path == files["images"] / "1001.jpg" and test[0].image_path.is_file()
    assert test[0].meta["dataset"] == "flickr30k"
    assert len(read_karpathy(tmp_path)) == 2
