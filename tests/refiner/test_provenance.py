"""Which refiner made a store and a checkpoint: recorded by `lyrics refine`, copied by the recipes into
the model config, rebuilt at inference, and refused when asked for inconsistently."""

import json

import pytest

import tiny
from lyrics.refiner.job import load_refiner_config, run_job
from lyrics.refiner.provenance import (
    RefinerMismatch,
    apply_overrides,
    check_store,
    checkpoint_refiner_config,
    differences,
    parse_refiner_options,
    record_store_refiner,
    refiner_fields,
)
from lyrics.refiner.store import StoreError, open_store

from .toyscenes import random_scene

TINY_TOY = {
    "refiner_config.tagger": "toy",
    "refiner_config.detector": "toy",
    "refiner_config.segmenter": "toy",
    "refiner_config.detection_feature_size": 24,
    "refiner_config.segmentation_feature_size": 8,
}


def toy_store(root, **overrides):
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(2):
        random_scene(i, count=2)[0].save(root / "images" / f"{i}.png")
    config = load_refiner_config("tiny", None, [f"{k}={v}" for k, v in overrides.items()], ["toy"])
    run_job(root / "images", root / "store", config, progress=False, workers=1)
    return root / "store", config


# ------------------------------------------------------------------------------------ the store
def test_store_records_the_full_refiner_config_that_made_it(tmp_path):
    store_dir, config = toy_store(tmp_path, box_threshold=0.3, tagger_model="/models/toy-tagger")
    recorded = json.loads((store_dir / "store.json").read_text())["refiner_config"]
    assert recorded["tagger"] == recorded["detector"] == recorded["segmenter"] == "toy"
    assert recorded["box_threshold"] == 0.3 and recorded["tagger_model"] == "/models/toy-tagger"
    assert "batch_size" not in recorded and "id2label" not in recorded  # runtime and transformers' generic keys
    assert recorded == {k: v for k, v in refiner_fields(config).items() if k != "batch_size"}
    assert open_store(store_dir).refiner_config == recorded


def test_resumed_refine_with_another_config_names_the_differing_fields(tmp_path):
    store_dir, config = toy_store(tmp_path)
    changed = load_refiner_config("tiny", None, ["box_threshold=0.5", "tagger_model=/elsewhere/tagger"], ["toy"])
    with pytest.raises(StoreError) as caught:
        run_job(tmp_path / "images", store_dir, changed, progress=False, workers=1)
    message = str(caught.value)
    assert "refiner_config.box_threshold: 0.25 vs 0.5" in message
    assert "refiner_config.tagger_model: None vs '/elsewhere/tagger'" in message
    assert "refiner_config.nms_iou" not in message  # only what differs
    assert json.loads((store_dir / "store.json").read_text())["refiner_config"]["box_threshold"] == 0.25


def test_a_store_from_before_the_record_was_trimmed_still_resumes(tmp_path):
    store_dir, config = toy_store(tmp_path)
    manifest = store_dir / "store.json"
    info = json.loads(manifest.read_text())
    info["refiner_config"].update(id2label={"0": "LABEL_0"}, return_dict=True)  # what the old writer kept
    manifest.write_text(json.dumps(info))
    summary = run_job(tmp_path / "images", store_dir, config, progress=False, workers=1)
    assert summary.shards_skipped == 1 and summary.shards_written == 0


# ----------------------------------------------------------------------------- choosing backends
def test_a_changed_backend_takes_its_own_default_model():
    base = refiner_fields(load_refiner_config("paper"))
    assert apply_overrides(base, {"tagger": "clip"})["tagger_model"] == "openai/clip-vit-large-patch14"
    assert apply_overrides(base, {"tagger": "clip", "tagger_model": "/m/clip"})["tagger_model"] == "/m/clip"
    assert apply_overrides(base, {"tagger": "ram"})["tagger_model"] == "ram_plus_swin_b"  # unchanged backend
    assert apply_overrides(base, {"segmenter": "sam"})["segmenter_model"] == "facebook/sam-vit-huge"
    assert apply_overrides(base, {"segmenter": "none"})["segmentation_feature_size"] == 0
    with pytest.raises(ValueError, match="box_treshold"):
        apply_overrides(base, {"box_treshold": 0.3})


def test_refiner_options_parse_bare_and_nested_fields():
    assert parse_refiner_options(["tagger=clip", "refiner_config.box_threshold=0.3"]) == {"tagger": "clip", "box_threshold": 0.3}
    with pytest.raises(ValueError, match="unknown RefinerConfig field"):
        parse_refiner_options(["taggr=clip"])


def test_differences_ignore_runtime_fields_and_moved_models():
    recorded = refiner_fields(load_refiner_config("paper", None, None, ["tagger=clip"]))
    moved = {**recorded, "tagger_model": "/models/clip-vit-large-patch14", "batch_size": 64, "store_format": "webdataset"}
    assert differences(recorded, moved) == []
    other = {**recorded, "tagger_model": "openai/clip-vit-base-patch32", "max_objects": 5}
    assert differences(recorded, other) == [
        "max_objects: 100 vs 5",
        "tagger_model: 'openai/clip-vit-large-patch14' vs 'openai/clip-vit-base-patch32'",
    ]


# ----------------------------------------------------------------------------- the checkpoint
def test_checkpoint_records_its_store_refiner(tmp_path):
    """What the recipes do when they open `data.refiner_store` (`record_store_refiner` on the model's
    config): `save_pretrained` then carries the store's refiner into config.json."""
    from lyrics.configuration import LyricsConfig
    from lyrics.models.pretraining import LyricsForPretraining

    store_dir, _ = toy_store(tmp_path, box_threshold=0.35)
    model = LyricsForPretraining(tiny.lyrics_config(**TINY_TOY))
    assert model.config.trained_refiner_config is None
    record_store_refiner(model.config, open_store(store_dir))
    model.save_pretrained(str(tmp_path / "ckpt"))
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())["trained_refiner_config"]
    assert saved == refiner_fields(open_store(store_dir).refiner_config) and saved["box_threshold"] == 0.35
    loaded = LyricsConfig.from_pretrained(str(tmp_path / "ckpt"))
    assert checkpoint_refiner_config(loaded).box_threshold == 0.35  # the store's refiner, not refiner_config's 0.25
    assert loaded.refiner_config.box_threshold == 0.25
    record_store_refiner(loaded, {"a.png": None})  # an in-memory stand-in store records nothing
    assert loaded.trained_refiner_config == saved


def test_recorded_refiner_is_built_and_explicit_contradictions_are_refused():
    config = tiny.lyrics_config(**TINY_TOY)
    record_store_refiner(config, type("Store", (), {"refiner_config": {**refiner_fields(config.refiner_config), "max_objects": 3}})())
    assert checkpoint_refiner_config(config).max_objects == 3
    assert checkpoint_refiner_config(config, {"max_objects": 3, "batch_size": 2}).batch_size == 2  # repeats, runtime
    with pytest.raises(RefinerMismatch, match=r"tagger: 'toy' vs 'clip'.*tagger_model: None vs 'openai/clip-vit-large-patch14'"):
        checkpoint_refiner_config(config, {"tagger": "clip"}, where="runs/final")
    with pytest.raises(RefinerMismatch, match="^runs/final was trained on features of the refiner recorded"):
        checkpoint_refiner_config(config, {"max_objects": 8}, where="runs/final")


def test_checkpoint_without_a_record_falls_back_and_takes_overrides():
    config = tiny.lyrics_config(**TINY_TOY)
    assert config.trained_refiner_config is None
    assert checkpoint_refiner_config(config).to_dict() == config.refiner_config.to_dict()
    assert checkpoint_refiner_config(config, {"box_threshold": 0.4}).box_threshold == 0.4
    with pytest.raises(RefinerMismatch, match="makes 28-d local features but"):
        checkpoint_refiner_config(config, {"segmenter": "none"})  # the MQ-Former reads 36-d features


def test_an_eval_store_must_come_from_the_recorded_refiner(tmp_path):
    store_dir, _ = toy_store(tmp_path, box_threshold=0.5)
    store = open_store(store_dir)
    config = tiny.lyrics_config(**TINY_TOY)
    check_store(config, store)  # no record: nothing to compare (the feature width is checked elsewhere)
    config.trained_refiner_config = refiner_fields(config.refiner_config)
    with pytest.raises(RefinerMismatch, match=r"box_threshold: 0.25 vs 0.5"):
        check_store(config, store)
    config.trained_refiner_config = refiner_fields(store.refiner_config)
    check_store(config, store)
