import json

from data.layouts import write_alpaca
from lyrics.data.convert import convert


def test_alpaca_records_are_text_only(tmp_path):
    records = convert("alpaca", [write_alpaca(tmp_path)["file"]]).records
    assert [r.id for r in records] == ["alpaca-0", "alpaca-1"]
    assert records[0].image is None and records[0].task == "text"
    assert records[0].conversations == [
        {"from": "human", "value": "Give three tips for staying healthy."},
        {"from": "gpt", "value": "Eat well, sleep, move."},
    ]
    assert records[1].conversations[0]["value"] == "Translate to French.\nHello"


def test_llava_passthrough_validates_and_skips(tmp_path):
    path = tmp_path / "llava.json"
    good = {"id": "1", "image": "x.jpg", "conversations": [{"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Yo"}]}
    path.write_text(json.dumps([good, {"id": "2", "conversations": []}]))
    result = convert("llava", [path])
    assert [r.id for r in result.records] == ["1"] and "record 1" in result.skipped[0]
