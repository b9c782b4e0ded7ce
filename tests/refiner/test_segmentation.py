import numpy as np
import pytest
import torch
from PIL import Image

from lyrics.refiner.segmentation import SamSegmenter, box_cells, grid_weights_from_masks, pool_features, valid_cells
from lyrics.refiner.stages import BackendError

from . import tinymodels
from .toyscenes import random_scene


def test_valid_cells_exclude_sam_padding():
    # a 64x64 input holding a 64x32 (h x w) image on a 4x4 grid: only the left two columns are image
    cells = valid_cells((4, 4), (64, 32), (64, 64))
    assert cells.tolist() == [[1, 1, 0, 0]] * 4


def test_box_cells_cover_the_box_and_at_least_its_centre():
    cells = box_cells(torch.tensor([[0.0, 0.0, 32.0, 16.0], [40.0, 40.0, 41.0, 41.0]]), (4, 4), (64, 64))
    assert cells[0].tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert cells[1].nonzero().tolist() == [[2, 2]]  # tiny box: the cell holding its centre


def test_mask_pooling_is_a_weighted_mean_with_box_fallback():
    embedding = torch.arange(2 * 2 * 2, dtype=torch.float32).reshape(2, 2, 2)  # C=2, 2x2 grid
    logits = torch.full((2, 4, 4), -1.0)
    logits[0, :2, :] = 1.0  # object 0 covers the top row of cells
    weights = grid_weights_from_masks(logits, (2, 2), (64, 64), (64, 64))
    assert weights[0].tolist() == [[1, 1], [0, 0]] and weights[1].sum() == 0
    fallback = torch.zeros(2, 2, 2)
    fallback[:, 1, 1] = 1.0
    pooled = pool_features(embedding, weights, fallback)
    assert pooled[0].tolist() == [0.5, 4.5]  # mean of cells (0,0),(0,1) per channel
    assert pooled[1].tolist() == [3.0, 7.0]  # empty mask -> the fallback cell (1,1)


@pytest.mark.parametrize("hq", [False, True], ids=["sam", "sam-hq"])
def test_sam_encodes_each_image_once_and_masks_every_box(hq, sam_dir, samhq_dir):
    segmenter = SamSegmenter(str(samhq_dir if hq else sam_dir), hq=hq, feature_size=tinymodels.SAM_CHANNELS)
    calls = []
    original = segmenter.model.get_image_embeddings

    def counting(pixel_values, *args, **kwargs):
        calls.append(pixel_values.shape[0])
        return original(pixel_values, *args, **kwargs)

    segmenter.model.get_image_embeddings = counting
    images = [random_scene(0, 3)[0], Image.new("RGB", (40, 30)), random_scene(1, 2)[0].resize((100, 60))]
    boxes = [[(10.0, 10.0, 60.0, 50.0), (100.0, 20.0, 200.0, 220.0)], [], [(0.0, 0.0, 50.0, 60.0), (20.0, 5.0, 30.0, 15.0), (60.0, 10.0, 99.0, 59.0)]]
    segments = segmenter.segment(images, boxes)
    assert calls == [2]  # one encoder pass for the batch, one encoding per image that has boxes
    assert [len(s) for s in segments] == [2, 0, 3]
    for image, image_segments in zip(images, segments):
        for seg in image_segments:
            assert seg.mask.shape == (image.height, image.width) and seg.mask.dtype == bool
            assert seg.feature.shape == (tinymodels.SAM_CHANNELS,) and torch.isfinite(seg.feature).all()


@pytest.mark.parametrize("hq", [False, True], ids=["sam", "sam-hq"])
def test_shared_encoding_gives_the_masks_of_a_full_forward_per_box(hq, sam_dir, samhq_dir):
    segmenter = SamSegmenter(str(samhq_dir if hq else sam_dir), hq=hq, feature_size=tinymodels.SAM_CHANNELS)
    image = random_scene(2, 3)[0]
    boxes = [(10.0, 10.0, 90.0, 80.0), (120.0, 100.0, 210.0, 200.0)]
    shared = segmenter.segment([image], [boxes])[0]
    processor, model = segmenter.processor, segmenter.model
    for box, seg in zip(boxes, shared):
        inputs = processor(images=image, input_boxes=[[list(box)]], return_tensors="pt")
        with torch.no_grad():
            out = model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"].float(), multimask_output=False)
        mask = processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])[0][0, 0]
        assert np.array_equal(seg.mask, mask.numpy())


def test_segmenter_feature_size_must_match(sam_dir):
    with pytest.raises(BackendError, match="segmentation_feature_size=256"):
        SamSegmenter(str(sam_dir), hq=False, feature_size=256)
