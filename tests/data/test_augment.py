import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from lyrics.data.augment import AugmentConfig, BoxAwareAugment, swap_sides
from lyrics.refiner.record import RefinedObject, RefinerRecord
from lyrics.refiner.spatial import format_spatial

W, H = 320, 240
RED_PX = (40, 60, 120, 140)  # x1, y1, x2, y2 (exclusive) of the red rectangle
GREEN_PX = (200, 30, 290, 100)
DET, SEG = 6, 3  # tiny local-feature layout: [detection 6 | box 4 | segmentation 3]


def norm(px):
    return (px[0] / W, px[1] / H, px[2] / W, px[3] / H)


def scene():
    image = Image.new("RGB", (W, H), (230, 230, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle([RED_PX[0], RED_PX[1], RED_PX[2] - 1, RED_PX[3] - 1], fill=(220, 20, 20))
    draw.rectangle([GREEN_PX[0], GREEN_PX[1], GREEN_PX[2] - 1, GREEN_PX[3] - 1], fill=(20, 200, 20))
    return image


def cxcywh(box):
    return [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]]


def refiner_record():
    objects = [RefinedObject(tag, 0.9, px, norm(px), {"size": [H, W], "counts": "x"}) for tag, px in (("red box", RED_PX), ("green box", GREEN_PX))]
    features = torch.randn(2, DET + 4 + SEG, generator=torch.Generator().manual_seed(0))
    for k, obj in enumerate(objects):
        features[k, DET:DET + 4] = torch.tensor(cxcywh(obj.box_norm))
    spatial = format_spatial((o.tag, o.box_norm) for o in objects)
    return RefinerRecord("scene.png", W, H, ["red box", "green box"], objects, spatial, features)


CONVERSATION = [
    {"from": "human", "value": "<image>\nWhat is the leftmost object <box:0>?"},
    {"from": "gpt", "value": "The Red box on the LEFT, see <box:0>."},
]


def mask_bbox(image, colour):
    a = np.asarray(image).astype(int)
    if colour == "red":
        mask = (a[..., 0] > 150) & (a[..., 1] < 110) & (a[..., 2] < 110)
    else:
        mask = (a[..., 1] > 140) & (a[..., 0] < 110) & (a[..., 2] < 110)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None, 0
    return (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), int(mask.sum())


def covers(box_norm, pixels_bbox, size=224, tol=2.0):
    x1, y1, x2, y2 = (v * size for v in box_norm)
    px1, py1, px2, py2 = pixels_bbox
    return px1 >= x1 - tol and py1 >= y1 - tol and px2 <= x2 + tol and py2 <= y2 + tol


def iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("seed", range(24))
def test_boxes_cover_the_same_pixels_after_crop_and_flip(seed):
    aug = BoxAwareAugment(AugmentConfig(scale=(0.3, 1.0), detection_feature_size=DET, min_visible=0.2))
    out = aug.apply(scene(), [norm(RED_PX), norm(GREEN_PX)], CONVERSATION, refiner_record(), rng=random.Random(seed))
    assert out.image.size == (224, 224)
    # The referred red box is never cut: all of it is visible and its box fits its pixels.
    red_bbox, _ = mask_bbox(out.image, "red")
    red_box = out.boxes[0]
    assert red_bbox is not None and covers(red_box, red_bbox)
    assert iou([v * 224 for v in red_box], red_bbox) > 0.85
    # The unreferred green box is either kept with its visible pixels inside it, or dropped.
    green_bbox, green_pixels = mask_bbox(out.image, "green")
    if 1 in out.dropped_boxes:
        assert len(out.boxes) == 1
    else:
        assert green_bbox is not None and covers(out.boxes[1], green_bbox)
    # Text follows the flip.
    flipped = out.params.flip
    assert ("rightmost" in out.conversations[0]["value"]) == flipped
    assert out.conversations[1]["value"] == ("The Red box on the RIGHT, see <box:0>." if flipped else CONVERSATION[1]["value"])
    if flipped:
        assert red_bbox[0] > 224 / 2 - 10 or out.params.crop[2] < W  # mirrored to the right unless a tight crop
    # The refiner record moved with the image.
    record = out.refiner
    assert (record.width, record.height) == (224, 224)
    tags = [o.tag for o in record.objects]
    assert tags[0] == "red box" and record.objects[0].box_norm == pytest.approx(red_box)
    assert record.objects[0].box == pytest.approx(tuple(v * 224 for v in red_box))
    assert record.objects[0].mask_rle is None
    assert record.local_features.shape == (len(tags), DET + 4 + SEG)
    for k, obj in enumerate(record.objects):
        assert record.local_features[k, DET:DET + 4].tolist() == pytest.approx(cxcywh(obj.box_norm), abs=1e-5)
    original = refiner_record().local_features
    assert torch.equal(record.local_features[0, :DET], original[0, :DET]) and torch.equal(record.local_features[0, DET + 4:], original[0, DET + 4:])
    if "green box" in tags:
        assert covers(record.objects[1].box_norm, green_bbox)
    assert record.spatial_text == record.spatial()


def test_the_crop_actually_varies_and_flips_happen():
    aug = BoxAwareAugment(AugmentConfig(scale=(0.3, 1.0), detection_feature_size=DET))
    params = [aug.apply(scene(), [norm(RED_PX)], CONVERSATION, rng=random.Random(s)).params for s in range(100)]
    assert len({p.crop for p in params}) > 50
    assert 30 < sum(p.flip for p in params) < 70
    assert not any(p.fallback for p in params)


def test_dropped_unreferenced_boxes_renumber_placeholders():
    conversation = [{"from": "human", "value": "<image>\nWhat is <box:1>?"}, {"from": "gpt", "value": "red <box:1>"}]
    aug = BoxAwareAugment(AugmentConfig(scale=(0.1, 0.12), flip_p=0.0, max_attempts=50))
    out = aug.apply(scene(), [norm(GREEN_PX), norm(RED_PX)], conversation, rng=random.Random(0))
    assert out.dropped_boxes == [0]  # a small crop around the red box cannot keep the far green one
    assert out.conversations[1]["value"] == "red <box:0>" and len(out.boxes) == 1
    assert covers(out.boxes[0], mask_bbox(out.image, "red")[0])


def test_no_crop_can_fit_falls_back_to_the_full_image():
    whole = [{"from": "human", "value": "<image>\nDescribe <box:0>."}, {"from": "gpt", "value": "ok"}]
    aug = BoxAwareAugment(AugmentConfig(scale=(0.2, 0.3), flip_p=0.0))
    out = aug.apply(scene(), [(0.0, 0.0, 1.0, 1.0)], whole, rng=random.Random(0))
    assert out.params.fallback and out.params.crop == (0, 0, W, H)


def test_literal_coordinates_freeze_the_geometry():
    literal = [{"from": "human", "value": "<image>\nWhat is at [0.1, 0.2, 0.3, 0.4] on the left?"}, {"from": "gpt", "value": "red"}]
    aug = BoxAwareAugment(AugmentConfig(flip_p=1.0))
    out = aug.apply(scene(), [], literal, rng=random.Random(0))
    assert out.params.frozen and not out.params.flip and out.params.crop == (0, 0, W, H)
    assert out.conversations == literal
    expected = scene().resize((224, 224), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(out.image), np.asarray(expected))


def test_same_rng_same_output_and_layout_is_required():
    aug = BoxAwareAugment(AugmentConfig(detection_feature_size=DET))
    a = aug.apply(scene(), [norm(RED_PX)], CONVERSATION, refiner_record(), rng=random.Random(7))
    b = aug.apply(scene(), [norm(RED_PX)], CONVERSATION, refiner_record(), rng=random.Random(7))
    assert a.params == b.params and a.image.tobytes() == b.image.tobytes() and a.boxes == b.boxes
    with pytest.raises(ValueError, match="detection_feature_size"):
        BoxAwareAugment().apply(scene(), [], [{"from": "human", "value": "x"}], refiner_record(), rng=random.Random(0))


def test_swap_sides_keeps_case_and_whole_words():
    assert swap_sides("Left of the rightmost, LEFT; leftover right-hand Leftmost") == "Right of the leftmost, RIGHT; leftover left-hand Rightmost"
