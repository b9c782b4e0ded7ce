"""Open-set detection prompted by tags: Grounding-DINO through transformers, plus NMS and top-K.

Grounding-DINO reads a text prompt of lowercase phrases separated by ". " and ending with "."
(docs/design.md, "Refiner components in transformers"; commas do not separate phrases) and scores each of its 900 queries against every
text token. Its text side is capped at `config.max_text_len` (256) tokens, so a long tag list is split
into chunks that each fit, every chunk is run against the image, and the candidates are merged before
NMS. Per kept query we take:

* the box: `pred_boxes` (normalised cxcywh) scaled to pixel xyxy;
* the tag: the phrase whose tokens score highest on average (the mean asks every word of a
  multi-word tag such as "traffic light" to agree), kept when that mean reaches `text_threshold`;
* the score: the query's best token probability, kept when it reaches `box_threshold` (the same
  rule as Grounding-DINO's own post-processing);
* the feature: the decoder state of the query, `last_hidden_state[b, q]` (256-d for
  Grounding-DINO-T), the "detection" part of the local features (paper section 3.1).

NMS is written in plain torch because torchvision is not a dependency here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image

from lyrics.models.loading import load_pretrained
from lyrics.refiner.stages import BackendError, Detection, check_feature_size


# --------------------------------------------------------------------------------------------- NMS
def box_iou_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of xyxy boxes: `(N, 4)`, `(M, 4)` -> `(N, M)`; empty boxes give 0."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes: `(N, 4)` xyxy boxes.
        scores: `(N,)` scores; ties keep the earlier box (stable order), so results are deterministic.
        iou_threshold: a box whose IoU with a kept, higher-scored box is above this is dropped.
        labels: optional `(N,)` integer classes; boxes of different classes never suppress each other.

    Returns:
        `(K,)` long tensor of kept indices, highest score first.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    boxes = boxes.double()
    if labels is not None:
        # Shift each class to its own region of the plane so cross-class IoU is 0 (batched NMS).
        span = float(boxes.max() - boxes.min()) + 1.0
        boxes = boxes + (labels.double() * span)[:, None]
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou_matrix(boxes[order], boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]


def select_detections(
    detections: Sequence[Detection], nms_iou: float, max_objects: int, class_agnostic: bool = True
) -> list[Detection]:
    """NMS over the merged candidates of an image, then the top `max_objects` by score."""
    if not detections:
        return []
    boxes = torch.tensor([d.box for d in detections], dtype=torch.float64)
    scores = torch.tensor([d.score for d in detections], dtype=torch.float64)
    labels = None
    if not class_agnostic:
        names = sorted({d.tag for d in detections})
        labels = torch.tensor([names.index(d.tag) for d in detections])
    keep = nms(boxes, scores, nms_iou, labels)
    return [detections[i] for i in keep[:max_objects].tolist()]


# ---------------------------------------------------------------------------------------- prompts
def clean_phrase(tag: str) -> str:
    """Grounding-DINO phrases are lowercase and must not contain the "." separator."""
    return " ".join(str(tag).replace(".", " ").lower().split())


def prompt_text(phrases: Sequence[str]) -> str:
    """`["a cat", "a dog"]` -> `"a cat. a dog."` (docs/design.md, "Refiner components in transformers")."""
    return ". ".join(phrases) + "."


def phrase_chunks(tags: Sequence[str], count_tokens: Callable[[str], int], max_text_len: int) -> list[list[str]]:
    """Split tags into prompts that each fit in `max_text_len` tokens.

    A chunk costs 2 tokens ([CLS], [SEP]) plus, per phrase, its tokens and one "." token. Tags are
    cleaned (`clean_phrase`) and de-duplicated in order; a tag too long for an empty prompt is dropped
    (it could never be scored whole).
    """
    budget = max_text_len - 2
    chunks: list[list[str]] = []
    current: list[str] = []
    used = 0
    seen: set[str] = set()
    for tag in tags:
        phrase = clean_phrase(tag)
        if not phrase or phrase in seen:
            continue
        seen.add(phrase)
        cost = count_tokens(phrase) + 1
        if cost > budget:
            continue
        if used + cost > budget:
            chunks.append(current)
            current, used = [], 0
        current.append(phrase)
        used += cost
    if current:
        chunks.append(current)
    return chunks


def phrase_spans(phrases: Sequence[str]) -> list[tuple[int, int]]:
    """Character span of each phrase inside `prompt_text(phrases)`."""
    spans, start = [], 0
    for phrase in phrases:
        spans.append((start, start + len(phrase)))
        start += len(phrase) + 2  # ". "
    return spans


def token_phrase_index(offsets: torch.Tensor, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Map each token (by its `(start, end)` character offsets) to its phrase index, or -1 for
    special tokens, "." and padding. `offsets`: `(T, 2)` -> `(T,)` long."""
    index = torch.full((offsets.shape[0],), -1, dtype=torch.long)
    for t, (start, end) in enumerate(offsets.tolist()):
        if end <= start:
            continue
        for j, (s, e) in enumerate(spans):
            if s <= start and end <= e:
                index[t] = j
                break
    return index


def score_queries(probs: torch.Tensor, token_index: torch.Tensor, num_phrases: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per query: best token probability, best phrase, and that phrase's mean token probability.

    Args:
        probs: `(Q, T)` sigmoid of Grounding-DINO's logits over the first T text positions.
        token_index: `(T,)` phrase of each token, -1 for none.
        num_phrases: P.

    Returns:
        `box_score (Q,)`, `phrase (Q,)` long, `phrase_score (Q,)`.
    """
    onehot = torch.zeros(token_index.shape[0], num_phrases, dtype=probs.dtype)
    valid = token_index >= 0
    onehot[valid.nonzero(as_tuple=True)[0], token_index[valid]] = 1.0
    counts = onehot.sum(0).clamp(min=1.0)
    mean = probs @ onehot / counts  # (Q, P)
    masked = probs.masked_fill(~valid[None, :], 0.0)
    box_score = masked.max(-1).values
    phrase_score, phrase = mean.max(-1)
    return box_score, phrase, phrase_score


def cxcywh_to_xyxy_pixels(boxes: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """`(N, 4)` normalised cxcywh -> pixel xyxy clipped to the image."""
    cx, cy, w, h = boxes.unbind(-1)
    xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).clamp(0.0, 1.0)
    return xyxy * torch.tensor([width, height, width, height], dtype=xyxy.dtype)


# -------------------------------------------------------------------------------- Grounding-DINO
class GroundingDinoDetector:
    """Grounding-DINO (`GroundingDinoForObjectDetection` + its processor) as the refiner's detector.

    Args:
        model_id: hub id or local directory (default `IDEA-Research/grounding-dino-tiny`).
        box_threshold, text_threshold: see the module docstring (released code: 0.25 and 0.2).
        feature_size: `RefinerConfig.detection_feature_size`; must equal the model's `d_model`.
        batch_size: (image, prompt chunk) pairs per forward pass.
        device: torch device for the model.
    """

    def __init__(
        self,
        model_id: str,
        box_threshold: float = 0.25,
        text_threshold: float = 0.2,
        feature_size: int = 256,
        batch_size: int = 8,
        device: str | torch.device = "cpu",
    ) -> None:
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        try:
            self.processor = AutoProcessor.from_pretrained(model_id)
            self.model = load_pretrained(GroundingDinoForObjectDetection, model_id).to(device).eval()
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load Grounding-DINO from {model_id!r}: {exc}") from exc
        self.tokenizer = self.processor.tokenizer
        self.device = torch.device(device)
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold
        self.batch_size = batch_size
        self.max_text_len = int(self.model.config.max_text_len)
        self.feature_size = int(self.model.config.d_model)
        check_feature_size("Grounding-DINO", self.feature_size, feature_size, "detection_feature_size")
        self._token_counts: dict[str, int] = {}

    def count_tokens(self, phrase: str) -> int:
        if phrase not in self._token_counts:
            self._token_counts[phrase] = len(self.tokenizer.tokenize(phrase))
        return self._token_counts[phrase]

    def chunks(self, tags: Sequence[str]) -> list[list[str]]:
        return phrase_chunks(tags, self.count_tokens, self.max_text_len)

    @torch.no_grad()
    def detect(self, images: Sequence[Image.Image], tags: Sequence[Sequence[str]]) -> list[list[Detection]]:
        """Candidates per image, merged over prompt chunks (NMS and top-K are the pipeline's)."""
        pairs = [(i, chunk) for i, image_tags in enumerate(tags) for chunk in self.chunks(image_tags)]
        results: list[list[Detection]] = [[] for _ in images]
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start : start + self.batch_size]
            for (i, _), found in zip(batch, self._run([images[i] for i, _ in batch], [c for _, c in batch])):
                results[i].extend(found)
        return results

    def _run(self, images: Sequence[Image.Image], chunks: Sequence[Sequence[str]]) -> list[list[Detection]]:
        texts = [prompt_text(chunk) for chunk in chunks]
        text = self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.max_text_len,
            return_offsets_mapping=True,
            return_token_type_ids=True,
            return_tensors="pt",
        )
        offsets = text.pop("offset_mapping")
        pixels = self.processor.image_processor(list(images), return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in {**text, **pixels}.items()}
        outputs = self.model(**inputs)
        probs = outputs.logits.float().sigmoid().cpu()
        states = outputs.last_hidden_state.float().cpu()
        boxes = outputs.pred_boxes.float().cpu()
        found: list[list[Detection]] = []
        for b, (image, chunk) in enumerate(zip(images, chunks)):
            length = int(text["attention_mask"][b].sum())
            index = token_phrase_index(offsets[b, :length], phrase_spans(chunk))
            box_score, phrase, phrase_score = score_queries(probs[b, :, :length], index, len(chunk))
            keep = (box_score >= self.box_threshold) & (phrase_score >= self.text_threshold)
            pixel_boxes = cxcywh_to_xyxy_pixels(boxes[b], image.width, image.height)
            dets = []
            for q in keep.nonzero(as_tuple=True)[0].tolist():
                x1, y1, x2, y2 = pixel_boxes[q].tolist()
                if x2 - x1 <= 0 or y2 - y1 <= 0:
                    continue
                dets.append(Detection(chunk[int(phrase[q])], float(box_score[q]), (x1, y1, x2, y2), states[b, q].clone()))
            found.append(dets)
        return found


__all__ = [
    "GroundingDinoDetector",
    "box_iou_matrix",
    "clean_phrase",
    "nms",
    "phrase_chunks",
    "prompt_text",
    "select_detections",
]
