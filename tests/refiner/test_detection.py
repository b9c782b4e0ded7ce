import pytest
import torch
from PIL import Image

from lyrics.refiner.detection import (
    GroundingDinoDetector,
    box_iou_matrix,
    clean_phrase,
    nms,
    phrase_chunks,
    phrase_spans,
    prompt_text,
    score_queries,
    select_detections,
    token_phrase_index,
)
from lyrics.refiner.spatial import box_iou
from lyrics.refiner.stages import BackendError, Detection

from . import tinymodels
from .toyscenes import random_scene


def det(tag, score, box):
    return Detection(tag, score, box, torch.zeros(2))


# ------------------------------------------------------------------------------------------- NMS
def test_iou_matrix_matches_scalar_iou():
    boxes = torch.tensor([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30], [0, 0, 0, 0]], dtype=torch.float64)
    matrix = box_iou_matrix(boxes, boxes)
    for i in range(4):
        for j in range(4):
            assert matrix[i, j].item() == pytest.approx(box_iou(boxes[i].tolist(), boxes[j].tolist()))
    assert matrix[0, 1].item() == pytest.approx(25 / 175)


def test_nms_exact():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 9], [50, 50, 60, 60], [2, 0, 12, 10]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.95, 0.3, 0.5, 0.8])
    # IoU with box 1 (0.95): box 0 81/119 = 0.68, box 4 0.68, box 2 72/118 = 0.61: all dropped at 0.6.
    assert nms(boxes, scores, 0.6).tolist() == [1, 3]
    # At 0.7 boxes 0 and 4 survive box 1; box 0 then drops box 2 (IoU 0.9) but not box 4 (80/120).
    assert nms(boxes, scores, 0.7).tolist() == [1, 0, 4, 3]
    assert nms(boxes, scores, 1.0).tolist() == [1, 0, 4, 3, 2]  # nothing suppressed, sorted by score
    labels = torch.tensor([0, 1, 0, 0, 0])
    assert nms(boxes, scores, 0.6, labels).tolist() == [1, 0, 3]  # 0 survives: its class has no better box
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


def test_nms_ties_are_stable():
    boxes = torch.tensor([[0, 0, 10, 10]] * 3, dtype=torch.float32)
    assert nms(boxes, torch.tensor([0.5, 0.5, 0.5]), 0.5).tolist() == [0]


def test_select_detections_nms_then_top_k():
    found = [det("a", 0.4, (0, 0, 10, 10)), det("b", 0.9, (1, 1, 10, 10)), det("c", 0.8, (40, 40, 50, 50)), det("d", 0.7, (80, 80, 90, 90))]
    assert [d.tag for d in select_detections(found, 0.5, 10)] == ["b", "c", "d"]
    assert [d.tag for d in select_detections(found, 0.5, 2)] == ["b", "c"]
    assert [d.tag for d in select_detections(found, 0.5, 10, class_agnostic=False)] == ["b", "c", "d", "a"]
    assert select_detections([], 0.5, 3) == []


# ---------------------------------------------------------------------------------------- prompts
def test_prompt_follows_grounding_dino_rules():
    assert clean_phrase("  Traffic   Light. ") == "traffic light"
    assert prompt_text(["a cat", "a dog"]) == "a cat. a dog."
    text = prompt_text(["red circle", "cat"])
    assert [text[s:e] for s, e in phrase_spans(["red circle", "cat"])] == ["red circle", "cat"]


def test_chunks_respect_the_token_cap_and_keep_every_tag():
    tags = [f"tag{i} " + "word " * (i % 3) for i in range(20)]
    count = lambda phrase: len(phrase.split())  # noqa: E731 - one token per word
    chunks = phrase_chunks(tags, count, max_text_len=12)
    assert len(chunks) > 1
    for chunk in chunks:
        assert 2 + sum(count(p) + 1 for p in chunk) <= 12
    assert [p for chunk in chunks for p in chunk] == [clean_phrase(t) for t in tags]


def test_chunks_drop_duplicates_and_tags_longer_than_the_cap():
    count = lambda phrase: len(phrase.split())  # noqa: E731
    chunks = phrase_chunks(["Cat", "cat.", "a " * 20, "dog"], count, max_text_len=8)
    assert chunks == [["cat", "dog"]]
    assert phrase_chunks([], count, 8) == []


def test_token_index_and_query_scores():
    # prompt "red circle. cat." -> [CLS] red circle . cat . [SEP]
    offsets = torch.tensor([[0, 0], [0, 3], [4, 10], [10, 11], [12, 15], [15, 16], [0, 0]])
    index = token_phrase_index(offsets, phrase_spans(["red circle", "cat"]))
    assert index.tolist() == [-1, 0, 0, -1, 1, -1, -1]
    probs = torch.tensor([[0.9, 0.8, 0.2, 0.99, 0.1, 0.99, 0.9], [0.0, 0.3, 0.3, 0.0, 0.6, 0.0, 0.0]])
    box_score, phrase, phrase_score = score_queries(probs, index, 2)
    assert box_score.tolist() == pytest.approx([0.8, 0.6])  # specials and "." never count
    assert phrase.tolist() == [0, 1]
    assert phrase_score.tolist() == pytest.approx([0.5, 0.6])  # mean over the phrase's tokens


# --------------------------------------------------------------------------- Grounding-DINO (tiny)
def test_grounding_dino_loads_through_from_pretrained_and_detects(gdino_dir):
    detector = GroundingDinoDetector(str(gdino_dir), box_threshold=0.0, text_threshold=0.0, feature_size=tinymodels.GDINO_D_MODEL, batch_size=3)
    assert detector.max_text_len == 24 and detector.feature_size == tinymodels.GDINO_D_MODEL
    tags = ["red circle", "blue square", "green star", "yellow triangle", "purple hexagon", "orange diamond", "cat", "dog", "traffic light"]
    chunks = detector.chunks(tags)
    assert len(chunks) >= 2  # 8 tags do not fit in 24 tokens: the prompt is split
    images = [random_scene(seed, 2)[0] for seed in range(2)] + [Image.new("RGB", (50, 30), (200, 30, 30))]
    found = detector.detect(images, [tags, tags[:2], ["cat"]])
    assert len(found) == 3
    for image, dets, image_tags in zip(images, found, [tags, tags[:2], ["cat"]]):
        assert dets, "thresholds at 0 keep every query"
        assert {d.tag for d in dets} <= set(image_tags)
        for d in dets:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 < x2 <= image.width and 0 <= y1 < y2 <= image.height
            assert 0.0 <= d.score <= 1.0
            assert d.feature.shape == (tinymodels.GDINO_D_MODEL,)
    # candidates of all chunks are merged: up to num_queries per chunk
    assert len(found[0]) > 30
    kept = select_detections(found[0], 0.5, 5)
    assert len(kept) == 5 and [d.score for d in kept] == sorted((d.score for d in kept), reverse=True)
    boxes = torch.tensor([d.box for d in kept])
    iou = box_iou_matrix(boxes, boxes) - torch.eye(5)
    assert float(iou.max()) <= 0.5


def test_grounding_dino_batching_is_consistent(gdino_dir):
    detector = GroundingDinoDetector(str(gdino_dir), box_threshold=0.0, text_threshold=0.0, feature_size=tinymodels.GDINO_D_MODEL)
    image = random_scene(3, 3)[0]
    alone = detector.detect([image], [["cat", "dog"]])[0]
    batched = detector.detect([image, image], [["cat", "dog"], ["cat", "dog"]])
    for dets in batched:  # same-size images: no padding, so the batch changes nothing
        assert [d.tag for d in dets] == [d.tag for d in alone]
        assert torch.allclose(torch.stack([d.feature for d in dets]), torch.stack([d.feature for d in alone]), atol=1e-4)


def test_grounding_dino_feature_size_mismatch_is_a_setup_error(gdino_dir):
    with pytest.raises(BackendError, match="detection_feature_size=256"):
        GroundingDinoDetector(str(gdino_dir), feature_size=256)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(BackendError, match="cannot load Grounding-DINO"):
        GroundingDinoDetector(str(tmp_path / "nothing-here"))
