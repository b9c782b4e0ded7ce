import numpy as np
import pytest
import torch
from PIL import Image

from lyrics.configuration import RefinerConfig
from lyrics.presets import load_config
from lyrics.refiner import rle
from lyrics.refiner.pipeline import VisualRefiner, box_feature
from lyrics.models.processing import pad_local_features
from lyrics.refiner.spatial import box_iou, format_spatial, parse_spatial
from lyrics.refiner.stages import BackendError
from lyrics.toyworld import refiner_backend as toy

from . import tinymodels
from .toyscenes import mask_box, random_scene


def toy_config(**overrides) -> RefinerConfig:
    values = load_config("tiny").refiner_config.to_dict()
    values.update({"tagger": "toy", **overrides})
    return RefinerConfig(**{k: v for k, v in values.items() if k in RefinerConfig.default_config_fields()})


def check_record(record, image, config):
    assert (record.width, record.height) == image.size
    assert record.local_features.shape == (len(record.objects), config.local_feature_size)
    scores = [o.score for o in record.objects]
    assert scores == sorted(scores, reverse=True) and len(scores) <= config.max_objects
    assert record.spatial_text == format_spatial([(o.tag, o.box_norm) for o in record.objects], config.coordinate_format, config.spatial_format)
    assert [t for t, _ in parse_spatial(record.spatial_text, config.coordinate_format, config.spatial_format)] == [o.tag for o in record.objects]
    d = config.detection_feature_size
    for obj, row in zip(record.objects, record.local_features):
        assert obj.tag in record.tags
        x1, y1, x2, y2 = obj.box
        assert obj.box_norm == pytest.approx((x1 / image.width, y1 / image.height, x2 / image.width, y2 / image.height))
        if config.box_feature_size:
            assert torch.equal(row[d : d + 4], box_feature(obj.box_norm))
        if obj.mask_rle is not None:
            assert obj.mask_rle["size"] == [image.height, image.width]


def test_toy_refiner_end_to_end():
    config = toy_config()
    refiner = VisualRefiner.from_config(config)
    scenes = [random_scene(seed, count=3 + seed) for seed in range(3)]
    records = refiner([s[0] for s in scenes], ["a", "b", "c"])
    assert [r.image_id for r in records] == ["a", "b", "c"]
    for record, (image, objects, masks) in zip(records, scenes):
        check_record(record, image, config)
        assert sorted(record.tags) == sorted(o.tag for o in objects)
        for drawn, mask in zip(objects, masks):
            obj = next(o for o in record.objects if o.tag == drawn.tag)
            assert box_iou(obj.box, mask_box(mask)) > 0.7
            assert np.array_equal(rle.decode(obj.mask_rle), mask)
    # one image at a time gives the same records, bit for bit
    alone = refiner.refine(scenes[1][0], "b")
    assert alone.metadata() == records[1].metadata() and torch.equal(alone.local_features, records[1].local_features)


def test_top_k_and_given_tags():
    image, objects, _ = random_scene(4, count=5)
    refiner = VisualRefiner.from_config(toy_config(tagger="given", max_objects=2))
    record = refiner([image], ["x"], [[objects[0].tag, objects[1].tag, objects[2].tag, "green elephant"]])[0]
    assert record.tags == [objects[0].tag, objects[1].tag, objects[2].tag, "green elephant"]
    assert len(record.objects) == 2 and {o.tag for o in record.objects} <= {o.tag for o in objects[:3]}
    with pytest.raises(ValueError, match="tagger='given'"):
        refiner([image], ["x"])


def test_image_without_objects_gives_an_empty_record():
    config = toy_config()
    record = VisualRefiner.from_config(config)([Image.new("RGB", (1, 1))], ["dot"])[0]
    assert record.objects == [] and record.tags == [] and record.spatial_text == ""
    assert record.local_features.shape == (0, config.local_feature_size)
    batch, mask = pad_local_features([record.local_features], config.local_feature_size)
    assert batch.shape == (1, 0, config.local_feature_size) and mask.shape == (1, 0)


def test_transformers_backends_end_to_end(clip_dir, gdino_dir, samhq_dir, tmp_path):
    vocab = tmp_path / "tags.txt"
    vocab.write_text("\n".join(f"{t}\t-1" for t in ["red circle", "blue square", "green star", "yellow triangle", "purple hexagon",
                                                    "orange diamond", "cat", "dog", "traffic light"]) + "\n")
    config = RefinerConfig(
        tagger="clip", tagger_model=str(clip_dir), tag_vocabulary=str(vocab), max_tags=9,
        detector_model=str(gdino_dir), box_threshold=0.0, text_threshold=0.0, nms_iou=0.5, max_objects=6,
        segmenter="sam_hq", segmenter_model=str(samhq_dir),
        detection_feature_size=tinymodels.GDINO_D_MODEL, segmentation_feature_size=tinymodels.SAM_CHANNELS, batch_size=2,
    )
    refiner = VisualRefiner.from_config(config)
    images = [random_scene(s, 3)[0] for s in range(2)] + [Image.new("RGB", (90, 60), (30, 200, 30))]
    records = refiner(images, ["p", "q", "r"])
    for record, image in zip(records, images):
        check_record(record, image, config)
        assert len(record.tags) == 9 and len(record.objects) == 6  # thresholds at -1 / 0 keep everything, K caps
        assert all(o.mask_rle is not None for o in record.objects)
        assert record.local_features.shape[1] == 32 + 4 + 32
        kept = torch.tensor([o.box for o in record.objects])
        for i in range(len(kept)):
            for j in range(i):
                assert box_iou(kept[i].tolist(), kept[j].tolist()) <= 0.5


def test_no_segmenter_gives_the_released_layout(gdino_dir):
    config = RefinerConfig(
        tagger="given", tagger_model=None, detector_model=str(gdino_dir), box_threshold=0.0, text_threshold=0.0,
        segmenter="none", segmenter_model=None, segmentation_feature_size=0, detection_feature_size=tinymodels.GDINO_D_MODEL,
        max_objects=4, coordinate_format="unit3", spatial_format="released",
    )
    image = random_scene(1, 2)[0]
    record = VisualRefiner.from_config(config)([image], ["x"], [["cat", "dog"]])[0]
    check_record(record, image, config)
    assert record.local_features.shape == (4, tinymodels.GDINO_D_MODEL + 4)
    assert all(o.mask_rle is None for o in record.objects)
    assert record.spatial_text.count(" [SEP] ") == 3 and record.spatial_text.split(": [")[0] in ("cat", "dog")


def test_feature_size_mismatch_is_rejected():
    config = toy_config()
    analyzer = toy.ToyAnalyzer()
    with pytest.raises(BackendError, match="detection_feature_size"):
        VisualRefiner(config, toy.ToyTagger(analyzer), toy.ToyDetector(analyzer, feature_size=config.detection_feature_size + 8), toy.ToySegmenter(analyzer, 8))


def test_paper_preset_layout():
    config = load_config("paper").refiner_config
    assert config.local_feature_size == 516
    assert load_config("released").refiner_config.local_feature_size == 260
