"""Box-prompted segmentation with SAM / SAM-HQ through transformers, and per-object pooled features.

The ViT-H image encoder is about 85% of the refiner's FLOPs (docs/design.md, "Refiner components in transformers"), while the mask decoder
is tiny, so each image is encoded ONCE (`get_image_embeddings`, batched over images) and the
embedding is reused by the decoder for all of that image's boxes. SAM-HQ's decoder also needs the
encoder's intermediate (global-attention) embeddings; they are kept beside the image embedding.

Per object the segmenter returns the mask at image resolution (for the RLE in the record) and a
feature: the image embedding `(C=256, 64, 64)` averaged under the object's mask (the mask decoder's
low-resolution logits, binarised and area-pooled to the embedding grid). The padded part of SAM's
square input is excluded; an empty mask falls back to the cells under the box.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from lyrics.models.loading import load_pretrained
from lyrics.refiner.spatial import Box
from lyrics.refiner.stages import BackendError, Segment, check_feature_size


def grid_weights_from_masks(
    low_res_logits: torch.Tensor, grid: tuple[int, int], valid: tuple[float, float], input_size: tuple[int, int]
) -> torch.Tensor:
    """Binarised decoder masks -> per-cell weights on the embedding grid.

    Args:
        low_res_logits: `(K, h, w)` mask logits covering the padded model input.
        grid: `(E_h, E_w)` size of the image embedding.
        valid: `(height, width)` of the resized image inside the padded input (pixels).
        input_size: `(S_h, S_w)` padded input size (pixels).

    Returns:
        `(K, E_h, E_w)` weights in [0, 1]: the fraction of each cell covered by the mask, 0 on padding.
    """
    masks = (low_res_logits > 0).float()
    weights = F.adaptive_avg_pool2d(masks, grid)
    return weights * valid_cells(grid, valid, input_size)[None]


def valid_cells(grid: tuple[int, int], valid: tuple[float, float], input_size: tuple[int, int]) -> torch.Tensor:
    """`(E_h, E_w)` 1/0: cells whose centre lies on the image rather than on SAM's padding."""
    rows = (torch.arange(grid[0], dtype=torch.float32) + 0.5) * input_size[0] / grid[0]
    cols = (torch.arange(grid[1], dtype=torch.float32) + 0.5) * input_size[1] / grid[1]
    return ((rows[:, None] < valid[0]) & (cols[None, :] < valid[1])).float()


def box_cells(boxes: torch.Tensor, grid: tuple[int, int], input_size: tuple[int, int]) -> torch.Tensor:
    """`(K, 4)` xyxy boxes in input pixels -> `(K, E_h, E_w)` 1/0 cells under each box (at least the
    cell holding the box centre, so tiny boxes still pool something)."""
    cell_h, cell_w = input_size[0] / grid[0], input_size[1] / grid[1]
    rows = (torch.arange(grid[0], dtype=torch.float32) + 0.5) * cell_h
    cols = (torch.arange(grid[1], dtype=torch.float32) + 0.5) * cell_w
    x1, y1, x2, y2 = (boxes[:, i, None] for i in range(4))
    inside_r = (rows[None] >= y1) & (rows[None] <= y2)
    inside_c = (cols[None] >= x1) & (cols[None] <= x2)
    cells = (inside_r[:, :, None] & inside_c[:, None, :]).float()
    cy = ((y1 + y2)[:, 0] / 2 / cell_h).long().clamp(0, grid[0] - 1)
    cx = ((x1 + x2)[:, 0] / 2 / cell_w).long().clamp(0, grid[1] - 1)
    cells[torch.arange(len(boxes)), cy, cx] = 1.0
    return cells


def pool_features(embedding: torch.Tensor, weights: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Weighted mean of `(C, E_h, E_w)` embedding cells per object -> `(K, C)`.

    Objects whose weights are all zero (empty mask) use `fallback` weights (the box cells).
    """
    empty = weights.flatten(1).sum(-1) <= 1e-6
    weights = torch.where(empty[:, None, None], fallback, weights)
    total = weights.flatten(1).sum(-1).clamp(min=1e-6)
    return torch.einsum("khw,chw->kc", weights, embedding.float()) / total[:, None]


class SamSegmenter:
    """SAM or SAM-HQ as the refiner's segmenter.

    Args:
        model_id: hub id or local directory (`syscv-community/sam-hq-vit-huge`, `facebook/sam-vit-huge`).
        hq: True for `SamHQModel`, False for `SamModel`.
        feature_size: `RefinerConfig.segmentation_feature_size`; must equal the embedding channels (256).
        batch_size: images per image-encoder pass.
        device: torch device.
    """

    def __init__(
        self,
        model_id: str,
        hq: bool = True,
        feature_size: int = 256,
        batch_size: int = 8,
        device: str | torch.device = "cpu",
    ) -> None:
        from transformers import AutoProcessor, SamHQModel, SamModel

        model_class = SamHQModel if hq else SamModel
        try:
            self.processor = AutoProcessor.from_pretrained(model_id)
            self.model = load_pretrained(model_class, model_id).to(device).eval()
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load {model_class.__name__} from {model_id!r}: {exc}") from exc
        self.hq = hq
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.feature_size = int(self.model.config.vision_config.output_channels)
        check_feature_size(model_class.__name__, self.feature_size, feature_size, "segmentation_feature_size")

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """`(B, 3, S, S)` -> image embeddings `(B, C, E, E)` and, for SAM-HQ, the intermediate ones."""
        out = self.model.get_image_embeddings(pixel_values.to(self.device))
        if self.hq:
            embeddings, intermediate = out
            return embeddings, list(intermediate)
        return out, None

    @torch.no_grad()
    def decode(
        self, embedding: torch.Tensor, intermediate: list[torch.Tensor] | None, input_boxes: torch.Tensor
    ) -> torch.Tensor:
        """Masks of one image for all its boxes from a cached encoding.

        Args:
            embedding: `(1, C, E, E)`; intermediate: SAM-HQ's per-layer `(1, E, E, W)` or None.
            input_boxes: `(K, 4)` xyxy boxes in model-input pixels.

        Returns:
            `(K, h, w)` low-resolution mask logits over the padded input.
        """
        kwargs = dict(image_embeddings=embedding, input_boxes=input_boxes[None].to(self.device, embedding.dtype), multimask_output=False)
        if self.hq:
            kwargs["intermediate_embeddings"] = intermediate
        return self.model(**kwargs).pred_masks[0, :, 0]

    def segment(self, images: Sequence[Image.Image], boxes: Sequence[Sequence[Box]]) -> list[list[Segment]]:
        results: list[list[Segment]] = []
        for start in range(0, len(images), self.batch_size):
            results.extend(self._segment_batch(images[start : start + self.batch_size], boxes[start : start + self.batch_size]))
        return results

    @torch.no_grad()
    def _segment_batch(self, images: Sequence[Image.Image], boxes: Sequence[Sequence[Box]]) -> list[list[Segment]]:
        results: list[list[Segment]] = [[] for _ in images]
        todo = [i for i, b in enumerate(boxes) if len(b)]
        if not todo:
            return results
        inputs = self.processor.image_processor([images[i] for i in todo], return_tensors="pt")
        pixel_values = inputs["pixel_values"]
        input_size = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
        embeddings, intermediate = self.encode(pixel_values)  # one encoding per image
        grid = (int(embeddings.shape[-2]), int(embeddings.shape[-1]))
        for row, i in enumerate(todo):
            orig_h, orig_w = (int(v) for v in inputs["original_sizes"][row])
            new_h, new_w = (int(v) for v in inputs["reshaped_input_sizes"][row])
            scale = torch.tensor([new_w / orig_w, new_h / orig_h, new_w / orig_w, new_h / orig_h])
            input_boxes = torch.tensor([list(b) for b in boxes[i]], dtype=torch.float32) * scale
            inter = [t[row : row + 1] for t in intermediate] if intermediate is not None else None
            logits = self.decode(embeddings[row : row + 1], inter, input_boxes).float().cpu()
            masks = self.processor.post_process_masks(
                logits[None, :, None], inputs["original_sizes"][row : row + 1], inputs["reshaped_input_sizes"][row : row + 1]
            )[0][:, 0]
            weights = grid_weights_from_masks(logits, grid, (new_h, new_w), input_size)
            fallback = box_cells(input_boxes, grid, input_size) * valid_cells(grid, (new_h, new_w), input_size)[None]
            features = pool_features(embeddings[row].float().cpu(), weights, fallback)
            results[i] = [Segment(masks[k].numpy().astype(bool), features[k].clone()) for k in range(len(boxes[i]))]
        return results
