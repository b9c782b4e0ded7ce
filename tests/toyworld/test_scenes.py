import numpy as np
import pytest

from lyrics.toyworld import spec
from lyrics.refiner import rle
from lyrics.toyworld.scenes import (
    MIN_VISIBLE_FRACTION,
    draw_mask,
    generate_scene,
    scene_rng,
    split_scene,
)

ZERO_SHOT = set(spec.ZERO_SHOT_PAIRS)


@pytest.fixture(scope="module")
def scenes():
    return [split_scene(0, "train", i) for i in range(120)]


def test_same_seed_same_scene_and_bytes():
    a, b = split_scene(3, "val", 5), split_scene(3, "val", 5)
    assert a.objects == b.objects
    assert np.array_equal(a.pixels, b.pixels)
    assert a.jpeg_bytes() == b.jpeg_bytes()
    c = split_scene(4, "val", 5)
    assert not np.array_equal(a.pixels, c.pixels)


def test_objects_follow_the_vocabulary_and_counts(scenes):
    counts = [len(s.objects) for s in scenes]
    assert min(counts) >= spec.MIN_OBJECTS and max(counts) <= spec.MAX_OBJECTS
    assert len(set(counts)) >= 5  # counts vary
    for scene in scenes:
        assert scene.pixels.shape == (spec.IMAGE_SIZE, spec.IMAGE_SIZE, 3) and scene.pixels.dtype == np.uint8
        for k, obj in enumerate(scene.objects):
            assert obj.colour in spec.COLOURS and obj.shape in spec.SHAPES and obj.size in spec.SIZES
            assert obj.draw_order == k
            assert (obj.colour, obj.shape) not in ZERO_SHOT
            lo, hi = spec.SIZES[obj.size]
            assert lo <= obj.radius <= hi


def test_ground_truth_matches_the_drawn_masks(scenes):
    for scene in scenes:
        for k, obj in enumerate(scene.objects):
            mask = scene.mask(k)
            ys, xs = np.nonzero(mask)
            assert obj.area == mask.sum() > 0
            assert obj.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            x1, y1, x2, y2 = obj.box_norm()
            assert (x1, x2) == (obj.box[0] / 224, obj.box[2] / 224) and 0 <= y1 < y2 <= 1
            # the pixels inside the mask are the object's colour (up to the background noise)
            mean = scene.pixels[mask].astype(float).mean(axis=0)
            assert np.abs(mean - spec.COLOURS[obj.colour]).max() < 6


def test_occlusion_happens_but_keeps_every_object_answerable(scenes):
    fractions = [o.visible_fraction for s in scenes for o in s.objects]
    assert min(fractions) >= MIN_VISIBLE_FRACTION
    assert sum(f < 0.98 for f in fractions) >= 10  # some objects really are partly hidden
    for scene in scenes:
        for k, obj in enumerate(scene.objects):
            full = draw_mask(obj.shape, *obj.centre, obj.radius, obj.rotation)
            assert full.sum() == obj.full_area
            assert not (scene.mask(k) & ~full).any()  # visible part lies inside the drawn shape
            hidden = full & ~scene.mask(k)
            assert np.all(scene.owner[hidden] > k)  # only objects drawn later cover it


def test_same_colour_objects_never_touch(scenes):
    for scene in scenes:
        for i, a in enumerate(scene.objects):
            grown = scene.mask(i)
            grown = grown | np.roll(grown, 1, 0) | np.roll(grown, -1, 0) | np.roll(grown, 1, 1) | np.roll(grown, -1, 1)
            for j, b in enumerate(scene.objects):
                if j != i and b.colour == a.colour:
                    assert not (grown & scene.mask(j)).any()


def test_zero_shot_scenes_contain_a_held_out_pair():
    for i in range(40):
        scene = split_scene(0, "zeroshot", i)
        assert any((o.colour, o.shape) in ZERO_SHOT for o in scene.objects)


def test_required_pair_and_object_budget():
    scene = generate_scene(scene_rng(1, "test", 0), num_objects=3, required_pair=("red", "star"))
    assert (scene.objects[0].colour, scene.objects[0].shape) == ("red", "star")
    assert 1 <= len(scene.objects) <= 3
    with pytest.raises(ValueError, match="unknown split"):
        split_scene(0, "training", 0)


def test_scene_masks_round_trip_through_coco_rle():
    scene = split_scene(0, "train", 3)
    for k in range(len(scene.objects)):
        assert np.array_equal(rle.decode(rle.encode(scene.mask(k))), scene.mask(k))
