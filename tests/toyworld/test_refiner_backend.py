"""The toy refiner backend: its stages, their features and errors."""

import numpy as np
import pytest
import torch

from lyrics.refiner.stages import BackendError
from lyrics.toyworld import refiner_backend as toy
from lyrics.toyworld import spec
from lyrics.toyworld.vision import COLOUR_NAMES, SHAPE_NAMES
from refiner.toyscenes import Drawn, mask_box, random_scene, scene


def test_descriptors_have_the_configured_sizes_and_are_deterministic():
    image, objects, _ = random_scene(5, count=3)
    analyzer = toy.ToyAnalyzer()
    detector = toy.ToyDetector(analyzer, feature_size=28, box_threshold=0.25)
    segmenter = toy.ToySegmenter(analyzer, feature_size=10)  # 3x3 grid + one zero
    tags = [[o.tag for o in objects]]
    dets = detector.detect([image], tags)[0]
    assert len(dets) == 3
    segs = segmenter.segment([image], [[d.box for d in dets]])[0]
    for d, s in zip(dets, segs):
        assert d.feature.shape == (28,) and d.feature[24:].abs().sum() == 0
        assert s.feature.shape == (10,) and s.feature[9] == 0 and 0 < s.feature[:9].mean() <= 1
        colour = COLOUR_NAMES.index(d.tag.split()[0])
        assert torch.allclose(d.feature[:3], torch.tensor(spec.COLOURS[COLOUR_NAMES[colour]]) / 255.0, atol=0.03)
        # the decided class as one-hot colour and shape
        assert d.feature[12 + colour] == 1 and d.feature[12:18].sum() == 1
        assert d.feature[18 + SHAPE_NAMES.index(d.tag.split()[1])] == 1 and d.feature[18:24].sum() == 1
        assert SHAPE_NAMES[int(d.feature[3:9].argmax())] == d.tag.split()[1]
    again = toy.ToyDetector(toy.ToyAnalyzer(), feature_size=28).detect([image.copy()], tags)[0]
    assert all(torch.equal(a.feature, b.feature) and a.box == b.box for a, b in zip(dets, again))


def test_detector_keeps_only_requested_tags():
    image, objects, _ = random_scene(6, count=3)
    dets = toy.ToyDetector(toy.ToyAnalyzer(), feature_size=24).detect([image], [[objects[1].tag.upper()]])[0]
    assert [d.tag for d in dets] == [objects[1].tag]


def test_segmenter_on_boxes_from_another_detector():
    image, masks = scene([Drawn("blue", "circle", (60, 60), 20)], seed=2)
    box = mask_box(masks[0])
    shifted = (box[0] - 3, box[1] - 2, box[2] + 4, box[3] + 1)  # not the toy detector's box
    seg = toy.ToySegmenter(toy.ToyAnalyzer(), feature_size=4).segment([image], [[shifted]])[0][0]
    assert np.array_equal(seg.mask, masks[0])


def test_too_small_feature_sizes_are_clear_errors():
    with pytest.raises(BackendError, match="detection_feature_size=8 is too small"):
        toy.ToyDetector(toy.ToyAnalyzer(), feature_size=8)
    with pytest.raises(BackendError, match="segmentation_feature_size=3 is too small"):
        toy.ToySegmenter(toy.ToyAnalyzer(), feature_size=3)


def test_analyzer_cache_is_per_image_object():
    analyzer = toy.ToyAnalyzer()
    first, _ = scene([Drawn("red", "square", (50, 50), 20)])
    second, _ = scene([Drawn("blue", "star", (50, 50), 20)])
    assert analyzer(first) is analyzer(first)
    assert analyzer(second)[0].tag == "blue star" and analyzer(first)[0].tag == "red square"


def test_a_toy_refiner_shares_one_analyzer_between_its_stages():
    from lyrics.configuration import RefinerConfig
    from lyrics.refiner.pipeline import build_stages

    config = RefinerConfig(tagger="toy", tagger_model=None, detector="toy", detector_model=None, segmenter="toy", segmenter_model=None, detection_feature_size=24, segmentation_feature_size=8)
    tagger, detector, segmenter = build_stages(config)
    assert isinstance(tagger, toy.ToyTagger) and isinstance(detector, toy.ToyDetector) and isinstance(segmenter, toy.ToySegmenter)
    assert tagger.analyzer is detector.analyzer is segmenter.analyzer
    assert build_stages(config)[0].analyzer is not tagger.analyzer  # one per refiner
