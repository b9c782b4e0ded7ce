import torch

from data.layouts import write_coco_captions
from lyrics.data.pairs import CocoCaptionPairs
from lyrics.refiner.record import RefinerRecord


def test_coco_pairs_one_item_per_caption_with_refiner_and_skips(tmp_path):
    files = write_coco_captions(tmp_path)
    (files["images"] / "000000000002.jpg").write_bytes(b"broken")
    store = {"000000000001.jpg": RefinerRecord("000000000001.jpg", 64, 48, [], [], "", torch.zeros(0, 4))}
    ds = CocoCaptionPairs(files["annotations"], files["images"], refiner_store=store)
    assert len(ds) == 3  # image 3 has no caption
    pairs = [ds[i] for i in range(len(ds))]
    assert [p.caption for p in pairs] == ["A red square on the left.", "a small red box", "A red square on the left."]
    assert pairs[0].key == "000000000001.jpg" and pairs[0].refiner is store["000000000001.jpg"]
    assert pairs[0].meta["image_id"] == 1 and pairs[0].image.mode == "RGB"
    assert [s.index for s in ds.skipped] == [2] and "not a recognised image format" in ds.skipped[0].reason
