import io
import json
import tarfile

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lyrics.data.augment import BoxAwareAugment
from lyrics.data.webdata import WebDatasetPairs, expand_shards
from lyrics.refiner.record import RefinerRecord


def jpeg(colour=(200, 30, 30)):
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buf, format="JPEG")
    return buf.getvalue()


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(root, n_shards=4, per_shard=5, corrupt=("000002_00003",), no_caption=("000001_00001",)):
    """img2dataset layout: KEY.jpg, KEY.txt, KEY.json per sample; returns every good key."""
    good = []
    for s in range(n_shards):
        with tarfile.open(root / f"{s:05d}.tar", "w") as tar:
            for i in range(per_shard):
                key = f"{s:06d}_{i:05d}"
                image = b"not an image at all" if key in corrupt else jpeg()
                add(tar, f"{key}.jpg", image)
                if key not in no_caption:
                    add(tar, f"{key}.txt", f"caption of {key} on the left".encode())
                add(tar, f"{key}.json", json.dumps({"key": key, "url": f"http://x/{key}.jpg", "width": 40, "height": 30}).encode())
                if key not in corrupt and key not in no_caption:
                    good.append(key)
    return good


def test_reads_pairs_and_counts_bad_samples(tmp_path):
    good = write_shards(tmp_path)
    ds = WebDatasetPairs(str(tmp_path / "{00000..00003}.tar"))
    pairs = list(ds)
    assert [p.key for p in pairs] == good
    assert pairs[0].caption == "caption of 000000_00000 on the left" and pairs[0].image.size == (40, 30)
    assert pairs[0].meta["url"] == "http://x/000000_00000.jpg"
    assert ds.stats["corrupt_image"] == 1 and ds.stats["no_caption"] == 1 and ds.stats["yielded"] == len(good)


def test_rank_and_worker_sharding_never_duplicates(tmp_path):
    good = write_shards(tmp_path, n_shards=4)
    for world, workers in ((2, 1), (2, 2), (3, 2)):  # 4 shards: by shard, then by sample (6 consumers > 4 shards)
        keys = []
        for rank in range(world):
            ds = WebDatasetPairs(sorted(str(p) for p in tmp_path.glob("*.tar")), rank=rank, world_size=world)
            loader = DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=lambda p: p.key)
            keys += list(loader)
        assert sorted(keys) == sorted(good), (world, workers)


def test_truncated_and_missing_shards_are_skipped(tmp_path):
    good = write_shards(tmp_path, n_shards=2, corrupt=(), no_caption=())
    data = (tmp_path / "00001.tar").read_bytes()
    (tmp_path / "00001.tar").write_bytes(data[: len(data) // 2 + 100])
    ds = WebDatasetPairs([str(tmp_path / "00000.tar"), str(tmp_path / "00001.tar"), str(tmp_path / "nope.tar")])
    keys = [p.key for p in ds]
    assert keys[:5] == good[:5] and set(keys) <= set(good) and len(keys) < len(good)
    assert ds.stats["read_errors"] >= 2


def test_refiner_join_by_key_and_transform(tmp_path):
    good = write_shards(tmp_path, n_shards=1, corrupt=(), no_caption=())
    store = {key: RefinerRecord(key, 40, 30, [], [], "", torch.zeros(0, 8)) for key in good[:3]}
    ds = WebDatasetPairs(str(tmp_path / "*.tar"), refiner_store=store, transform=BoxAwareAugment(size=16, flip_p=1.0, detection_feature_size=2))
    pairs = list(ds)
    assert [p.key for p in pairs] == good[:3] and ds.stats["missing_refiner"] == 2
    assert pairs[0].refiner.image_id == good[0] and pairs[0].image.size == (16, 16)
    assert pairs[0].caption.endswith("on the right")  # the flip mirrored the caption


def test_shard_shuffle_is_seeded_per_epoch(tmp_path):
    write_shards(tmp_path, n_shards=4, corrupt=(), no_caption=())
    ds = WebDatasetPairs(str(tmp_path / "*.tar"), shuffle_seed=0)
    orders = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        orders.append(tuple(ds.plan()[0]))
    assert len(set(orders)) > 1 and all(sorted(o) == sorted(orders[0]) for o in orders)
    ds.set_epoch(2)
    assert tuple(ds.plan()[0]) == orders[2]


def test_expand_shards_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no shards"):
        expand_shards(str(tmp_path / "*.tar"))
    with pytest.raises(ValueError, match="split"):
        WebDatasetPairs(["x.tar"], split="nope")
