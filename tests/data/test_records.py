import json

import pytest

from lyrics.data.records import (
    InstructionRecord,
    RecordError,
    has_literal_boxes,
    lift_literal_boxes,
    load_records,
    render_conversation,
    save_records,
    validate_record,
)


def record(**overrides):
    data = {
        "id": "r1",
        "image": "a/b.jpg",
        "task": "rec",
        "conversations": [
            {"from": "human", "value": "<image>\nWhere is <T>the dog</T><box:1>, next to <box:0>?"},
            {"from": "gpt", "value": "<box:1>"},
        ],
        "boxes": [[0.1, 0.2, 0.3, 0.4], [0.5, 0.25, 0.75, 1.0]],
        "source": "test",
        "meta": {"k": 1},
    }
    data.update(overrides)
    return data


def test_render_uses_the_paper_markup_in_both_formats():
    rec = validate_record(record())
    turns = render_conversation(rec)
    assert turns[0]["value"] == "<image>\nWhere is <T>the dog</T><Bbox>(500,250),(750,999)</Box>, next to <Bbox>(100,200),(300,400)</Box>?"
    assert turns[1]["value"] == "<Bbox>(500,250),(750,999)</Box>"
    assert render_conversation(rec, "unit3")[1]["value"] == "<Bbox>(0.500,0.250),(0.750,1.000)</Box>"
    assert rec.referenced_boxes() == [0, 1]


def test_plain_llava_json_loads(tmp_path):
    path = tmp_path / "llava.json"
    rows = [
        {"id": 7, "image": "coco/1.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat is at [0.1, 0.2, 0.3, 0.4]?"},
                                                          {"from": "gpt", "value": "A cat."}], "model": "x"},
        {"id": "t", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
    ]
    path.write_text(json.dumps(rows))
    loaded = load_records(path)
    assert [r.task for r in loaded] == ["instruction", "text"]
    assert loaded[0].id == "7" and loaded[0].boxes == [] and loaded[0].meta["extra_fields"] == {"model": "x"}
    assert has_literal_boxes(loaded[0].conversations) and not has_literal_boxes(validate_record(record()).conversations)


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"id": ""}, "id", "non-empty string"),
        ({"boxes": [[0.5, 0.2, 0.3, 0.4]]}, "boxes[0]", "normalised xyxy"),
        ({"boxes": [[0.1, 0.2, 0.3]]}, "boxes[0]", "expected"),
        ({"boxes": [[0.1, 0.2, 0.3, 0.4]]}, "conversations[0]", "<box:1> refers past the 1 boxes"),
        ({"conversations": [{"from": "gpt", "value": "x"}]}, "conversations[0]", "'from' must be 'human'"),
        ({"conversations": [{"from": "human", "value": "x"}]}, "conversations", "last turn"),
        ({"image": None}, "conversations", "has <image> but the record has no image"),
        ({"meta": []}, "meta", "must be an object"),
    ],
)
def test_validation_names_file_record_and_field(tmp_path, change, field, message):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([record(id="ok"), record(**change)]))
    with pytest.raises(RecordError) as info:
        load_records(path)
    assert info.value.file == str(path) and info.value.where.startswith("record 1") and info.value.field == field
    assert message in str(info.value)


def test_training_load_skips_and_records_bad_records(tmp_path):
    path = tmp_path / "r.jsonl"
    lines = [json.dumps(record(id="a")), "{not json", json.dumps(record(id="b", boxes=[])), json.dumps(record(id="a")), json.dumps(record(id="c"))]
    path.write_text("\n".join(lines) + "\n")
    loaded = load_records(path, skip_invalid=True)
    assert [r.id for r in loaded] == ["a", "c"]
    assert [(s.index, s.id) for s in loaded.skipped] == [(1, None), (2, "b"), (3, "a")]
    assert "line 2" in loaded.skipped[0].error and "duplicate id 'a'" in loaded.skipped[2].error


def test_save_is_atomic_and_round_trips(tmp_path):
    path = tmp_path / "out.json"
    recs = [validate_record(record())]
    save_records(recs, path)
    assert load_records(path).records == recs
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind
    save_records(recs, tmp_path / "out.jsonl")
    assert load_records(tmp_path / "out.jsonl").records == recs


def test_lift_literal_markup_boxes():
    rec = InstructionRecord("x", "i.jpg", "rec", [
        {"from": "human", "value": "<image>\nIs it <Bbox>(100,200),(300,400)</Box>?"},
        {"from": "gpt", "value": "yes, <T>cat</T><Bbox>(0.5,0.5),(0.6,0.7)</Box>"},
    ])
    lifted = lift_literal_boxes(rec, "int1000")
    assert lifted.conversations[0]["value"] == "<image>\nIs it <box:0>?"
    assert lifted.boxes[0] == pytest.approx((0.1, 0.2, 0.3, 0.4))
    assert render_conversation(lifted)[0]["value"] == rec.conversations[0]["value"]
