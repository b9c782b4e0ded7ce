import json

import pytest
import torch

from lyrics.refiner.record import RefinedObject, RefinerRecord
from lyrics.refiner.store import StoreError, StoreLayout, open_store, prepare_store, write_errors_summary, write_shard

DIM = 6


def make_record(image_id: str, objects: int, seed: int) -> RefinerRecord:
    g = torch.Generator().manual_seed(seed)
    objs = [RefinedObject(f"tag{k}", 0.9 - 0.1 * k, (k, k, k + 5.0, k + 4.0), (k / 10, k / 10, (k + 5) / 10, (k + 4) / 10),
                          {"size": [10, 10], "counts": "0X1"} if k == 0 else None) for k in range(objects)]
    return RefinerRecord(image_id, 10, 10, [o.tag for o in objs], objs, "text", torch.randn(objects, DIM, generator=g), {"n": seed})


@pytest.mark.parametrize("store_format", ["safetensors", "webdataset"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_round_trip(tmp_path, store_format, dtype):
    prepare_store(tmp_path, {"feature_dim": DIM, "store_format": store_format})
    shards = {0: [make_record("a/1.jpg", 3, 0), make_record("b.png", 0, 1)], 1: [make_record("c.jpg", 1, 2)]}
    errors = {0: [{"image": "bad.jpg", "reason": "empty file (0 bytes)"}], 1: []}
    for shard, records in shards.items():
        write_shard(tmp_path, shard, records, errors[shard], store_format, dtype, DIM)
    store = open_store(tmp_path)
    assert len(store) == 3 and store.ids() == ["a/1.jpg", "b.png", "c.jpg"] and store.shards() == [0, 1]
    assert "b.png" in store and "zzz" not in store
    originals = [r for records in shards.values() for r in records]
    for original, loaded in zip(originals, store):
        assert loaded.metadata() == original.metadata()
        assert loaded.local_features.dtype == getattr(torch, dtype)
        assert torch.equal(loaded.local_features, original.local_features.to(getattr(torch, dtype)))
    assert store.get("c.jpg").objects[0].tag == "tag0"
    assert store.get("b.png").local_features.shape == (0, DIM)
    with pytest.raises(KeyError, match="zzz"):
        store.get("zzz")
    assert store.errors() == errors[0]
    assert write_errors_summary(tmp_path) == 1
    assert [json.loads(line) for line in (tmp_path / "errors.jsonl").read_text().splitlines()] == errors[0]


def test_a_shard_exists_only_once_its_index_is_written(tmp_path):
    prepare_store(tmp_path, {"feature_dim": DIM, "store_format": "safetensors"})
    layout = StoreLayout(tmp_path)
    write_shard(tmp_path, 0, [make_record("a", 2, 0)], [], feature_dim=DIM)
    # an interrupted attempt at shard 1: features written, temporary files left, no index
    write_shard(tmp_path, 1, [make_record("b", 1, 1)], [], feature_dim=DIM)
    layout.index(1).unlink()
    (layout.shards / "00001.jsonl.tmp.12345").write_text("{partial")
    (layout.shards / "00001.safetensors.tmp.999").write_bytes(b"\x00")
    assert layout.done(0) and not layout.done(1)
    assert open_store(tmp_path).ids() == ["a"]
    layout.clean_partial(1)
    assert sorted(p.name for p in layout.shards.iterdir()) == ["00000.errors.jsonl", "00000.jsonl", "00000.safetensors", "00001.errors.jsonl", "00001.safetensors"]


def test_feature_width_must_match(tmp_path):
    bad = make_record("a", 1, 0)
    bad.local_features = torch.zeros(1, 7)
    with pytest.raises(StoreError, match="7-d features, the store holds 6"):
        write_shard(tmp_path, 0, [bad], [], feature_dim=DIM)
    assert not StoreLayout(tmp_path).done(0)


def test_prepare_store_refuses_another_job(tmp_path):
    info = {"feature_dim": DIM, "inputs_sha256": "abc", "refiner_config": {"box_threshold": 0.25}}
    prepare_store(tmp_path, info)
    prepare_store(tmp_path, dict(info))  # the same job resuming
    # the message names each differing field, inside the refiner config too, with both values
    with pytest.raises(StoreError, match=r"differs in: inputs_sha256: 'abc' vs 'def'; refiner_config.box_threshold: 0.25 vs 0.3;"):
        prepare_store(tmp_path, {**info, "inputs_sha256": "def", "refiner_config": {"box_threshold": 0.3}})
    assert json.loads((tmp_path / "store.json").read_text())["inputs_sha256"] == "abc"


def test_open_store_errors(tmp_path):
    with pytest.raises(StoreError, match="not a refiner store"):
        open_store(tmp_path)
    prepare_store(tmp_path, {"feature_dim": DIM})
    (tmp_path / "shards" / "00000.jsonl").write_text('{"image_id": "a"}\nnot json\n')
    store = open_store(tmp_path)  # shards are read lazily: the damage shows when they are read
    with pytest.raises(StoreError, match="00000.jsonl:2: invalid JSON"):
        store.ids()
    with pytest.raises(StoreError, match="00000.jsonl:2: invalid JSON"):
        list(store)
