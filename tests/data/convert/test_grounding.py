import pytest

from data.layouts import write_refcoco
from lyrics.data.convert import convert
from lyrics.data.records import render_conversation
from lyrics.refiner.spatial import box_iou, parse_first_box

TARGET = (0.1, 0.25, 0.4, 0.75)  # ann 900 in a 100 x 80 image
OTHER = (0.6, 0.125, 0.9, 0.5)  # ann 901


def test_rec_with_coordinates_answer_and_grounded_captioning(tmp_path):
    files = write_refcoco(tmp_path)
    result = convert("refcoco", [files["folder"]], images=files["images"], split="train", template=0)
    rec = [r for r in result.records if r.task == "rec"]
    gc = [r for r in result.records if r.task == "grounded_captioning"]
    assert len(rec) == len(gc) == 3  # 2 sentences of ref 1 + 1 of ref 3
    first = rec[0]
    assert first.conversations[0]["value"] == "<image>\nIn the given image, could you find and tell me the coordinates of man on the left?"
    assert first.conversations[1]["value"] == "<box:0>" and first.boxes[0] == pytest.approx(TARGET)
    assert render_conversation(first)[1]["value"] == "<Bbox>(100,250),(400,750)</Box>"
    assert first.image == "train2014/COCO_train2014_000000000009.jpg" and (files["images"] / first.image).is_file()
    g = gc[1]
    assert g.conversations[0]["value"] == "<image>\nWrite a description for the target object in the image. <box:0>"
    assert g.conversations[1]["value"] == "person in red" and g.boxes[0] == pytest.approx(TARGET)
    assert render_conversation(g)[0]["value"].endswith(" <Bbox>(100,250),(400,750)</Box>")


def test_bbox_templates_make_balanced_yes_no_verification(tmp_path):
    files = write_refcoco(tmp_path)
    result = convert("refcoco-rec", [files["folder"]], images=files["images"], split="train", template=3)
    # Ref 1 (2 sentences) has another object in its image -> a yes and a no each; ref 3 is alone -> skipped.
    answers = [r.conversations[1]["value"] for r in result.records]
    assert answers == ["Yes", "No", "Yes", "No"]
    yes, no = result.records[0], result.records[1]
    assert yes.conversations[0]["value"] == no.conversations[0]["value"] == (
        "<image>\nConfirm the presence of man on the left in the bounding box <box:0> in the image."
    )
    assert yes.boxes[0] == pytest.approx(TARGET) and no.boxes[0] == pytest.approx(OTHER)
    assert box_iou(yes.boxes[0], no.boxes[0]) < 0.5
    assert result.skipped == ["refcoco ref 3 sentence 0: no other object for the 'No' sample"]


def test_seeded_choice_balances_yes_no_and_falls_back_without_negatives(tmp_path):
    files = write_refcoco(tmp_path)
    for seed in range(6):
        records = convert("refcoco-rec", [files["folder"]], images=files["images"], seed=seed).records
        answers = [r.conversations[1]["value"] for r in records]
        assert answers.count("Yes") == answers.count("No")
        alone = [r for r in records if r.meta["ref_id"] == 3]
        assert len(alone) == 1 and alone[0].conversations[1]["value"] == "<box:0>"  # no {Bbox} template without a negative
        for r in records:
            if r.conversations[1]["value"] == "<box:0>":
                assert parse_first_box(render_conversation(r)[1]["value"]) is not None


def test_refs_file_plus_instances_inputs(tmp_path):
    files = write_refcoco(tmp_path, "refcoco+")
    result = convert("refcoco-gc", [files["folder"] / "refs(unc).p", files["folder"] / "instances.json"], split="val")
    assert [r.id for r in result.records] == ["refcoco+-gc-2-0"]
    assert result.records[0].boxes[0] == pytest.approx(OTHER)
