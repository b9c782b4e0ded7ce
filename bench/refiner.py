"""Visual refiner costs, measured side by side in one run.

Prints:
  * segmenter: one shared image encoding per image (what `SamSegmenter` does) versus one full SAM
    forward per box, on a small-but-not-tiny SAM (ViT 256 wide, 6 layers, 512 px input) on CPU:
    time ratio, and how well the two paths' masks agree (IoU; float rounding differs slightly);
  * detector: batched versus per-image Grounding-DINO (`GroundingDinoDetector`, batch 4 vs 1) on a
    reduced Grounding-DINO (Swin 48 wide, 320 px shortest edge) on CPU: time ratio;
  * FLOPs per image of each stage at paper dims, counted with torch.utils.flop_counter on the meta
    device: CLIP ViT-L/14 tagger at 224, Grounding-DINO-T at 800x800 with one 64-token prompt,
    SAM-HQ ViT-H at 1024 (encoder + decoder for K boxes); the dominant stage is named. A model whose
    forward cannot run on meta is counted on CPU with random weights instead, and the output says so.

FlopCounterMode counts matmuls, convolutions and attention; element-wise ops and Grounding-DINO's
deformable sampling (grid_sample) are not in the totals.

Usage: python bench/refiner.py [--images 2] [--boxes 8] [--repeats 3] [--threads 1] [--skip-timing]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from lyrics.refiner.detection import GroundingDinoDetector
from lyrics.refiner.segmentation import SamSegmenter


def timed_pair(first, second, repeats: int) -> tuple[float, float]:
    """Median wall times of `first()` and `second()`, measured alternately after one warm-up each,
    so that load from other processes hits both sides alike."""
    first(), second()
    a, b = [], []
    for _ in range(repeats):
        for fn, out in ((first, a), (second, b)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def images(count: int, size: tuple[int, int], seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(count)]


# ----------------------------------------------------------------------------------- segmenter
def bench_segmenter(root: Path, num_images: int, num_boxes: int, repeats: int) -> None:
    from transformers import SamConfig, SamModel, SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    torch.manual_seed(0)
    vision = dict(hidden_size=256, num_hidden_layers=6, num_attention_heads=8, image_size=512, patch_size=16,
                  output_channels=256, window_size=8, global_attn_indexes=[2, 5], num_pos_feats=128)
    model = SamModel(SamConfig(vision_config=vision, prompt_encoder_config=dict(image_size=512, patch_size=16)))
    processor = SamProcessor(image_processor=SamImageProcessorPil(size={"longest_edge": 512}, pad_size={"height": 512, "width": 512}))
    path = root / "sam-small"
    model.eval().save_pretrained(str(path))
    processor.save_pretrained(str(path))
    segmenter = SamSegmenter(str(path), hq=False, feature_size=256, batch_size=num_images)

    pics = images(num_images, (640, 480))
    rng = np.random.default_rng(1)
    boxes = []
    for _ in pics:
        xy = rng.uniform(0, 400, (num_boxes, 2))
        wh = rng.uniform(40, 200, (num_boxes, 2))
        boxes.append([tuple(map(float, (x, y, min(640, x + w), min(480, y + h)))) for (x, y), (w, h) in zip(xy, wh)])

    def shared():
        return segmenter.segment(pics, boxes)

    def per_box():
        masks = []
        for image, image_boxes in zip(pics, boxes):
            for box in image_boxes:
                inputs = processor(images=image, input_boxes=[[list(box)]], return_tensors="pt")
                with torch.no_grad():
                    out = model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"].float(), multimask_output=False)
                masks.append(processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])[0][0, 0])
        return masks

    ious = []
    for seg, mask in zip([s for segs in shared() for s in segs], per_box()):
        union = np.logical_or(seg.mask, mask.numpy()).sum()
        ious.append(np.logical_and(seg.mask, mask.numpy()).sum() / union if union else 1.0)
    t_shared, t_box = timed_pair(shared, per_box, repeats)
    n = num_images * num_boxes
    print(f"segmenter  SAM ViT-256x6 @512, {num_images} image(s) x {num_boxes} boxes (CPU)")
    print(f"  shared encoding : {t_shared * 1000:8.1f} ms   ({num_images} image encodings + {num_images} decoder calls)")
    print(f"  encoding per box: {t_box * 1000:8.1f} ms   ({n} image encodings + {n} decoder calls)")
    print(f"  ratio per-box / shared = {t_box / t_shared:.2f}x   mask agreement: mean IoU {np.mean(ious):.4f} over {n} boxes")


# ------------------------------------------------------------------------------------ detector
def bert_vocab(words: list[str]) -> dict[str, int]:
    """BERT ids 101/102/1012/1029 ([CLS], [SEP], ".", "?") matter to Grounding-DINO; keep them."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(100)] + ["[CLS]", "[SEP]", "[MASK]", "[UNK]"]
    tokens += [f"[unused{i}]" for i in range(len(tokens), 1012)] + ["."]
    tokens += [f"[unused{i}]" for i in range(len(tokens), 1029)] + ["?"] + words
    return {t: i for i, t in enumerate(tokens)}


def bench_detector(root: Path, num_images: int, repeats: int) -> None:
    from transformers import BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection, GroundingDinoProcessor, SwinConfig
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import GroundingDinoImageProcessorPil

    torch.manual_seed(0)
    words = ["person", "dog", "cat", "car", "tree", "sky", "road", "bicycle", "table", "chair"]
    vocab = bert_vocab(words)
    swin = SwinConfig(embed_dim=48, depths=[2, 2, 2, 2], num_heads=[3, 6, 12, 24], window_size=7, out_indices=[2, 3, 4])
    text = dict(model_type="bert", hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024,
                max_position_embeddings=256, vocab_size=len(vocab))
    config = GroundingDinoConfig(backbone_config=swin, text_config=text, encoder_layers=3, decoder_layers=3, num_queries=300,
                                 encoder_ffn_dim=1024, decoder_ffn_dim=1024)
    path = root / "gdino-small"
    GroundingDinoForObjectDetection(config).eval().save_pretrained(str(path))
    GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessorPil(size={"shortest_edge": 320, "longest_edge": 480}),
        tokenizer=BertTokenizer(vocab=vocab),
    ).save_pretrained(str(path))
    batched = GroundingDinoDetector(str(path), box_threshold=0.3, text_threshold=0.25, feature_size=256, batch_size=num_images)
    single = GroundingDinoDetector(str(path), box_threshold=0.3, text_threshold=0.25, feature_size=256, batch_size=1)
    pics = images(num_images, (480, 320))
    tags = [words] * len(pics)
    t_batch, t_single = timed_pair(lambda: batched.detect(pics, tags), lambda: single.detect(pics, tags), repeats)
    print(f"detector   Grounding-DINO (Swin-48, 3+3 layers, 300 queries) @320x480, {num_images} images, 10 tags (CPU)")
    print(f"  batched ({num_images})     : {t_batch * 1000:8.1f} ms")
    print(f"  per image (1)   : {t_single * 1000:8.1f} ms")
    print(f"  ratio per-image / batched = {t_single / t_batch:.2f}x")


# --------------------------------------------------------------------------------------- FLOPs
def count_flops(build, run) -> tuple[float, str]:
    """FLOPs of `run(model)`, on meta if the forward allows it, else on CPU with random weights."""
    try:
        with torch.device("meta"):
            model = build()
        model = model.to("meta")  # some modules create parameters with legacy constructors, off meta
        with torch.device("meta"), FlopCounterMode(display=False) as counter:
            run(model, "meta")
        return counter.get_total_flops(), "meta"
    except (RuntimeError, NotImplementedError) as exc:
        reason = str(exc).splitlines()[0][:90]
    model = build().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run(model, "cpu")
    return counter.get_total_flops(), f"CPU (meta failed: {reason})"


def paper_flops(num_boxes: int, num_tags: int = 4585, prompt_tokens: int = 64) -> None:
    from transformers import (CLIPVisionConfig, CLIPVisionModelWithProjection, GroundingDinoConfig,
                              GroundingDinoForObjectDetection, SamHQConfig, SamHQModel)

    rows = []
    clip_cfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                                image_size=224, patch_size=14, projection_dim=768)
    flops, where = count_flops(lambda: CLIPVisionModelWithProjection(clip_cfg),
                               lambda m, d: m(pixel_values=torch.zeros(1, 3, 224, 224, device=d)))
    flops += 2 * num_tags * 768  # similarity to the cached tag embeddings
    rows.append(("tagger    CLIP ViT-L/14 @224", flops, where))

    def run_gdino(model, device):
        ids = torch.full((1, prompt_tokens), 1000, dtype=torch.long, device=device)
        ids[0, 0], ids[0, -1] = 101, 102
        model(pixel_values=torch.zeros(1, 3, 800, 800, device=device), input_ids=ids, attention_mask=torch.ones_like(ids),
              token_type_ids=torch.zeros_like(ids), pixel_mask=torch.ones(1, 800, 800, dtype=torch.long, device=device))

    flops, where = count_flops(lambda: GroundingDinoForObjectDetection(GroundingDinoConfig()), run_gdino)
    rows.append((f"detector  Grounding-DINO-T @800x800, {prompt_tokens} tokens", flops, where))

    sam_cfg = SamHQConfig(vision_config=dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, global_attn_indexes=[7, 15, 23, 31]),
                          mask_decoder_config=dict(vit_dim=1280))
    enc, where_enc = count_flops(lambda: SamHQModel(sam_cfg), lambda m, d: m.get_image_embeddings(torch.zeros(1, 3, 1024, 1024, device=d)))

    def run_decoder(model, device):
        emb = torch.zeros(1, 256, 64, 64, device=device)
        inter = [torch.zeros(1, 64, 64, 1280, device=device)] * 4
        model(image_embeddings=emb, intermediate_embeddings=inter, input_boxes=torch.zeros(1, num_boxes, 4, device=device), multimask_output=False)

    dec, where_dec = count_flops(lambda: SamHQModel(sam_cfg), run_decoder)
    rows.append(("segmenter SAM-HQ ViT-H @1024, image encoder", enc, where_enc))
    rows.append((f"segmenter SAM-HQ mask decoder, {num_boxes} boxes", dec, where_dec))

    total = sum(f for _, f, _ in rows)
    print(f"FLOPs per image at paper dims (torch.utils.flop_counter; K = {num_boxes} boxes)")
    for name, flops, where in rows:
        print(f"  {name:<48} {flops / 1e9:9.1f} GFLOP  {100 * flops / total:5.1f}%  [{where}]")
    stages = {"tagger": rows[0][1], "detector": rows[1][1], "segmenter": rows[2][1] + rows[3][1]}
    dominant = max(stages, key=stages.get)
    print(f"  {'total':<48} {total / 1e9:9.1f} GFLOP")
    print(f"  dominant stage: {dominant} ({100 * stages[dominant] / total:.1f}% of refiner FLOPs; "
          f"SAM-HQ image encoder alone {100 * rows[2][1] / total:.1f}%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2, help="images for the segmenter and detector comparisons")
    parser.add_argument("--boxes", type=int, default=8, help="boxes per image for the segmenter comparison")
    parser.add_argument("--flop-boxes", type=int, default=20, help="K boxes per image in the FLOP count")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 by default: on a machine shared with other jobs, 2 OpenMP threads on 2 cores "
                             "were measured 6x slower than 1, which would swamp the ratios)")
    parser.add_argument("--skip-timing", action="store_true", help="only count FLOPs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_timing:
            bench_segmenter(Path(tmp), args.images, args.boxes, args.repeats)
            bench_detector(Path(tmp), 2 * args.images, args.repeats)
    paper_flops(args.flop_boxes)


if __name__ == "__main__":
    main()
