import pytest

from data.layouts import SHIKRA_IMAGE, write_shikra
from lyrics.data.convert import convert
from lyrics.data.records import render_conversation


def test_referential_dialogue_from_the_layout(tmp_path):
    files = write_shikra(tmp_path)
    result = convert("shikra-rd", [files["file"]], images=files["images"], template=0)
    assert len(result.records) == 2 and "missing.jpg" in result.skipped[0] and "file not found" in result.skipped[0]
    first = result.records[0]
    w, h = SHIKRA_IMAGE
    assert first.boxes[0] == pytest.approx((20 / w, 10 / h, 60 / w, 90 / h))
    assert first.boxes[1] == pytest.approx((120 / w, 20 / h, 180 / w, 80 / h))
    assert first.task == "referential_dialogue" and first.image == "1.jpg"
    assert first.conversations[0]["value"] == (
        "<image>\nFocus on the object <box:0> in the image, and answer the question: What is the object next to?."
    )
    assert first.conversations[1]["value"] == "It is next to the blue square <box:1> on the right."
    rendered = render_conversation(first)
    assert rendered[1]["value"] == "It is next to the blue square <Bbox>(600,200),(900,800)</Box> on the right."
    second = result.records[1]
    assert second.conversations[0]["value"] == "<image>\nDescribe the image."  # no box in the question: used as is
    assert second.conversations[1]["value"] == "Two shapes <box:0><box:1>."


def test_release_style_phrases_become_tag_and_bbox_units(tmp_path):
    files = write_shikra(tmp_path, release_style=True)
    record = convert("shikra-rd", [files["file"]], images=files["images"], template=5).records[0]
    assert record.conversations[0]["value"] == (
        "<image>\nRefer to the object <T>the man</T><box:0> in the image, and provide an answer to: What is the man holding?."
    )
    # The boxes belong to the chain-of-thought answer in Shikra's release: it is used.
    assert record.conversations[1]["value"] == (
        "<T>The man</T><box:0> holds a leash tied to <T>the dog</T><box:1> on the right. So the answer is a leash."
    )
    assert render_conversation(record, "unit3")[0]["value"].startswith(
        "<image>\nRefer to the object <T>the man</T><Bbox>(0.100,0.100),(0.300,0.900)</Box>"
    )


def test_only_question_templates_are_chosen(tmp_path):
    files = write_shikra(tmp_path)
    for seed in range(8):
        record = convert("shikra-rd", [files["file"]], images=files["images"], seed=seed).records[0]
        assert record.meta["template"] in (0, 2, 5)
