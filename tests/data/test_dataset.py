import json

import pytest
import torch
from torch.utils.data import DataLoader

from data.layouts import write_image
from lyrics.data.augment import AugmentConfig, BoxAwareAugment
from lyrics.data.dataset import InstructionDataset
from lyrics.data.records import InstructionRecord, load_records, save_records
from lyrics.refiner.record import RefinedObject, RefinerRecord


def rec(rid, image, boxes=(), text="<image>\nWhat is <box:0> on the left?", answer="a red box"):
    turns = [{"from": "human", "value": text}, {"from": "gpt", "value": answer}]
    return InstructionRecord(rid, image, "rec" if boxes else "text", turns, list(boxes), None, "test", {})


def refiner_for(image_id):
    obj = RefinedObject("red box", 0.9, (4.0, 4.0, 32.0, 24.0), (4 / 64, 4 / 48, 0.5, 0.5))
    features = torch.zeros(1, 10)
    features[0, 2:6] = torch.tensor([0.28, 0.29, 0.44, 0.42])
    return RefinerRecord(image_id, 64, 48, ["red box"], [obj], "", features)


@pytest.fixture
def root(tmp_path):
    write_image(tmp_path / "img" / "a.jpg")
    write_image(tmp_path / "img" / "b.png", fmt="PNG")
    (tmp_path / "img" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    return tmp_path


def records():
    box = (4 / 64, 4 / 48, 0.5, 0.5)
    return [
        rec("a", "img/a.jpg", [box]),
        rec("missing", "img/none.jpg", [box]),
        rec("corrupt", "img/corrupt.jpg", [box]),
        rec("b", "img/b.png", [box]),
        rec("t", None, text="Hello", answer="Hi"),
    ]


def test_samples_are_typed_with_image_boxes_and_refiner(root):
    store = {"img/a.jpg": refiner_for("img/a.jpg"), "img/b.png": refiner_for("img/b.png")}
    ds = InstructionDataset(records(), root, refiner_store=store)
    sample = ds[0]
    assert sample.id == "a" and sample.image.mode == "RGB" and sample.image.size == (64, 48)
    assert sample.refiner is store["img/a.jpg"] and sample.boxes == [(4 / 64, 4 / 48, 0.5, 0.5)]
    assert sample.rendered()[0]["value"] == "<image>\nWhat is <Bbox>(62,83),(500,500)</Box> on the left?"
    text = ds[4]
    assert text.image is None and text.refiner is None and text.task == "text"


def test_bad_images_are_skipped_recorded_and_replaced(root):
    ds = InstructionDataset(records(), root)
    assert [ds[i].id for i in range(len(ds))] == ["a", "b", "b", "b", "t"]
    assert [(s.id, s.reason) for s in ds.skipped] == [("missing", "file not found"), ("corrupt", ds.skipped[1].reason)]
    assert ds.skipped[1].reason.startswith("corrupt or truncated image")
    ds[1]  # no duplicate entries on a second epoch
    assert len(ds.skipped) == 2


def test_missing_refiner_record_is_skipped(root):
    ds = InstructionDataset(records(), root, refiner_store={"img/b.png": refiner_for("img/b.png")})
    assert ds[0].id == "b"
    assert ds.skipped[0].id == "a" and "no refiner record for 'img/a.jpg'" in ds.skipped[0].reason


def test_record_files_skip_invalid_records_and_drop_unloadable(root):
    path = root / "records.json"
    save_records(records(), path)
    data = json.loads(path.read_text())
    data.append({"id": "bad", "conversations": []})
    path.write_text(json.dumps(data))
    ds = InstructionDataset(path, root)
    assert len(ds) == 5 and [s.index for s in ds.invalid_records] == [5]
    dropped = ds.drop_unloadable(decode=True)
    assert [s.id for s in dropped] == ["missing", "corrupt"] and [r.id for r in ds.records] == ["a", "b", "t"]
    assert load_records(path, skip_invalid=True).skipped[0].index == 5


def test_augmentation_is_per_sample_and_epoch_deterministic(root):
    aug = BoxAwareAugment(AugmentConfig(size=32, scale=(0.3, 1.0), detection_feature_size=2))
    store = {"img/a.jpg": refiner_for("img/a.jpg"), "img/b.png": refiner_for("img/b.png")}
    ds = InstructionDataset(records(), root, refiner_store=store, transform=aug, seed=1)
    first = [ds[0].meta["augment"] for _ in range(2)]
    assert first[0] == first[1] and ds[0].image.size == (32, 32)
    epochs = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        epochs.append(ds[0].meta["augment"])
    assert len({json.dumps(e) for e in epochs}) > 1
    assert ds[4].image is None  # text passes through


def test_works_in_a_dataloader_with_workers(root):
    ds = InstructionDataset(records(), root)
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=lambda batch: [s.id for s in batch])
    assert [i for batch in loader for i in batch] == ["a", "b", "b", "b", "t"]


def test_bugs_in_a_transform_are_not_swallowed(root):
    def broken(sample, rng):
        return {}["oops"]

    ds = InstructionDataset(records(), root, transform=broken)
    with pytest.raises(KeyError, match="oops"):
        ds[0]
