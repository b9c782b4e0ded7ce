"""The toy world's classical vision (`lyrics.toyworld.vision`) on drawn and generated scenes."""

import numpy as np
import pytest
from PIL import Image

from lyrics.refiner.spatial import box_iou
from lyrics.toyworld import spec
from lyrics.toyworld import vision
from refiner.toyscenes import Drawn, mask_box, random_scene, scene


def test_pixel_classes():
    pixels = np.array([[spec.COLOURS["red"], spec.COLOURS["blue"], spec.BACKGROUND_RGB, (128, 128, 128)]], dtype=np.uint8)
    assert vision.classify_pixels(pixels).tolist() == [[vision.COLOUR_NAMES.index("red"), vision.COLOUR_NAMES.index("blue"), 6, -1]]


@pytest.mark.parametrize("shape", spec.SHAPES)
@pytest.mark.parametrize("size", ["small", "large"])
def test_every_shape_alone(shape, size):
    radius = spec.SIZES[size][0]
    image, masks = scene([Drawn("green", shape, (100, 120), radius)], seed=len(shape))
    found = vision.analyse(image)
    assert [o.tag for o in found] == [f"green {shape}"]
    assert box_iou(found[0].box, mask_box(masks[0])) > 0.9
    assert found[0].score > 0.8
    assert np.array_equal(found[0].mask, masks[0])


@pytest.mark.parametrize("seed", range(8))
def test_unoccluded_scenes_exact_tags_and_boxes(seed):
    image, objects, masks = random_scene(seed, count=2 + seed % 5)
    found = vision.analyse(image)
    assert sorted(o.tag for o in found) == sorted(o.tag for o in objects)
    for drawn, mask in zip(objects, masks):
        match = [o for o in found if o.tag == drawn.tag]
        assert len(match) == 1 and box_iou(match[0].box, mask_box(mask)) > 0.7


@pytest.mark.parametrize(
    "below, above",
    [
        (Drawn("red", "circle", (100, 100), 35), Drawn("blue", "square", (130, 105), 25)),
        (Drawn("yellow", "star", (110, 110), 40), Drawn("purple", "circle", (110, 82), 24)),
        (Drawn("orange", "hexagon", (110, 110), 36), Drawn("green", "triangle", (132, 128), 32)),
        (Drawn("blue", "diamond", (100, 100), 38), Drawn("red", "hexagon", (100, 125), 24)),
        (Drawn("purple", "triangle", (112, 120), 40), Drawn("orange", "diamond", (90, 130), 26)),
        (Drawn("green", "square", (100, 100), 30), Drawn("yellow", "circle", (122, 122), 24)),
        (Drawn("blue", "star", (100, 100), 38), Drawn("orange", "square", (135, 100), 22)),
    ],
)
def test_partially_hidden_shapes_are_recognised(below, above):
    image, masks = scene([below, above], seed=3)
    alone = scene([below], seed=3)[1][0]
    hidden = 1 - masks[0].sum() / alone.sum()
    assert 0.15 < hidden < 0.4, "the scene must really hide part of the lower shape"
    found = {o.tag: o for o in vision.analyse(image)}
    assert set(found) == {below.tag, above.tag}
    # the box is the VISIBLE extent (the toy world's ground truth), not the amodal one
    assert box_iou(found[below.tag].box, mask_box(masks[0])) > 0.9
    assert box_iou(found[above.tag].box, mask_box(masks[1])) > 0.9


def test_colour_blend_slivers_are_not_objects():
    # two touching shapes; thin blended lines between them must not become a third object
    image, _ = scene([Drawn("red", "square", (80, 100), 30), Drawn("yellow", "square", (140, 100), 30)], seed=1)
    pixels = np.asarray(image).copy()
    pixels[70:131, 110] = (222, 120, 35)  # a 1-pixel orange-looking seam
    found = vision.analyse(Image.fromarray(pixels))
    assert sorted(o.tag for o in found) == ["red square", "yellow square"]


def test_empty_and_tiny_images():
    assert vision.analyse(Image.new("RGB", (1, 1), spec.BACKGROUND_RGB)) == []
    assert vision.analyse(Image.new("RGB", (5, 5), spec.COLOURS["red"])) == []  # below MIN_AREA


def test_scenes_of_the_toy_world_generator():
    """The toy world's own scenes (rotated shapes, JPEG, occlusion): the backend must read them."""
    import io

    from lyrics.toyworld.scenes import split_scene

    hits = {True: [], False: []}  # unoccluded?
    for index in range(25):
        scene_ = split_scene(7, "train", index)
        found = vision.analyse(Image.open(io.BytesIO(scene_.jpeg_bytes())))
        for obj in scene_.objects:
            match = any(o.tag == obj.tag and box_iou(o.box, obj.box) > 0.7 for o in found)
            hits[obj.visible_fraction == 1.0].append(match)
    assert len(hits[True]) > 50 and len(hits[False]) > 10
    assert np.mean(hits[True]) >= 0.97 and np.mean(hits[True] + hits[False]) >= 0.95


def test_batched_rasterization_equals_one_template_at_a_time():
    rng = np.random.default_rng(0)
    rows, cols = np.arange(5, 47, dtype=np.float64), np.arange(3, 61, dtype=np.float64)
    boxes = np.array([[10.5, 8.5, 40.5, 30.5], [2.0, 1.0, 70.3, 52.8], [20.0, 20.0, 20.5, 21.0]]) + rng.normal(0, 0.3, (3, 4))
    for group, stacked in vision._BATCHES:  # every polygon template, in one box
        many = vision.rasterize_many(stacked, boxes[:1], rows, cols)
        assert many.shape == (len(group), len(rows), len(cols))
        for k, index in enumerate(group):
            assert np.array_equal(many[k], vision.rasterize(vision.TEMPLATES[index][1], boxes[0], rows, cols))
    for index in (0, 1, len(vision.TEMPLATES) - 1):  # one template (the circle too), in several boxes
        edges = vision._EDGES[index]
        many = vision.rasterize_many(None if edges is None else tuple(c[None] for c in edges), boxes, rows, cols)
        assert many.any() and not many.all()
        for k, box in enumerate(boxes):
            assert np.array_equal(many[k], vision.rasterize(vision.TEMPLATES[index][1], box, rows, cols))
