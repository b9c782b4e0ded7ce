"""Image-text retrieval and matching of a stage-1 checkpoint (what ITC and ITM learned).

BLIP-2 reports stage 1 as zero-shot retrieval on COCO and Flickr30k; this scores a
`LyricsForPretraining` checkpoint the same way on any COCO-format caption file (`captions_S.json`
and its image folder; the toy world writes one per split):

* **retrieval** - image-to-text and text-to-image R@1 / R@5 / R@10 among the split's images, ranked
  by the ITC similarity of the caption half: the visual queries' pooled projection against the
  caption's [CLS] projection. A retrieval query is a caption alone, so the spatial half of the ITC
  similarity (the refiner's spatial text against the grounding queries) is left out: the spatial
  text is computed from the image, and a candidate carrying its own image's spatial text would be
  found by that text, not by its caption. An image's R@k counts a hit when any of its captions is
  among the top k.
* **matching** - ITM accuracy on hard negatives: every caption with its own image (a positive), with
  the other image its caption similarity ranks first (a negative image), and every image with
  the caption of another image it ranks first (a negative caption); positives and negatives weigh
  equally. The pair goes through the regionalised ITM pass with the image's own refiner output; the
  decision is the visual-query head's, the half that the mask pairs with the caption (the grounding
  head reads the spatial text, which here always belongs to the image).

Chance is reported beside each number (`chance`): R@k = k captions of one image among all of them
(image to text) or k images among the split's (text to image); ITM 50%.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

KS = (1, 5, 10)


@dataclass
class RetrievalData:
    """A split's images (one stage-1 example each: image features, refiner record, first caption),
    its captions, and `caption_image[c]`, the index of caption c's image."""

    images: list[Any]  # `PretrainingExample`s with `image_embeds`
    captions: list[str]
    caption_image: torch.Tensor
    image_keys: list[str]
    collator: Any  # the stage-1 `PretrainingCollator`
    batch_size: int = 64

    def batches(self, pairs: list[tuple[int, int]]):
        """Collated stage-1 batches of (image index, caption index) pairs."""
        from lyrics.training.collate import PretrainingExample

        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            examples = [
                PretrainingExample(caption=self.captions[c], record=self.images[i].record, image_embeds=self.images[i].image_embeds, index=i)
                for i, c in chunk
            ]
            yield self.collator(examples)


def load_retrieval_data(
    model,
    tokenizer,
    captions: str | Path,
    images: str | Path,
    refiner_store: str | Path | None = None,
    image_features: str | Path | None = None,
    vision_model: str | Path | None = None,
    split: str | None = None,
    batch_size: int = 64,
    max_caption_tokens: int = 32,
    max_spatial_tokens: int = 160,
    limit: int | None = None,
) -> RetrievalData:
    """Read a COCO-format caption file: each image once, every caption.

    Image features come from `image_features` (a `lyrics.training.features` cache, as the toy world's
    stage 1 trains on) or from `vision_model` (a CLIP folder, run here); `limit` keeps the first
    `limit` images and their captions."""
    from lyrics.data.pairs import CocoCaptionPairs
    from lyrics.recipes.stage1 import Stage1Examples, load_encoder
    from lyrics.refiner.store import open_store
    from lyrics.training.collate import PretrainingCollator
    from lyrics.training.features import FeatureCache

    config = model.config
    store = open_store(refiner_store) if refiner_store else None
    if config.mqformer_config.num_grounding_query_tokens and store is None:
        raise ValueError("this checkpoint has grounding queries: give the refiner store of the split's images")
    features = FeatureCache(image_features) if image_features else None
    encoder = processor = None
    if features is None:
        if vision_model is None:
            raise ValueError("give image_features (a feature cache) or vision_model (the image encoder's folder)")
        encoder, processor = load_encoder(str(vision_model), config.vision_feature_layer)
    pairs = CocoCaptionPairs(captions, images, refiner_store=store, split=split)
    examples = Stage1Examples(pairs, processor, features)

    keys: dict[str, int] = {}  # image key -> its index
    image_examples: list[Any] = []
    texts: list[str] = []
    caption_image: list[int] = []
    for index in range(len(pairs)):
        key = pairs.items[index][0]
        if key not in keys:
            if limit is not None and len(keys) >= limit:
                continue
            keys[key] = len(keys)
            example = examples[index]
            if example.image_embeds is None:
                with torch.no_grad():
                    example.image_embeds = encoder(example.pixel_values[None])[0]
                example.pixel_values = None
            image_examples.append(example)
        texts.append(pairs.items[index][2])
        caption_image.append(keys[key])
    if len(keys) < 2:
        raise ValueError(f"{captions}: retrieval needs at least 2 images, found {len(keys)}")
    collator = PretrainingCollator(tokenizer, config, max_caption_tokens=max_caption_tokens, max_spatial_tokens=max_spatial_tokens)
    return RetrievalData(image_examples, texts, torch.tensor(caption_image), list(keys), collator, batch_size)


@torch.no_grad()
def embed(model, data: RetrievalData) -> tuple[torch.Tensor, torch.Tensor]:
    """(image features `(N_images, d)`, caption features `(N_captions, d)`), L2-normalised: the
    caption half of the ITC similarity."""
    images, texts = [], []
    for batch in data.batches([(i, 0) for i in range(len(data.images))]):
        image = model.image_layernorm(batch["image_embeds"].to(model.image_layernorm.weight.dtype))
        out = model.query_pass(image, batch.get("local_features"), batch.get("local_attention_mask"))
        images.append(F.normalize(model.vision_proj(out.visual_query_output.mean(dim=1)), dim=-1))
    for batch in data.batches([(int(i), c) for c, i in enumerate(data.caption_image)]):
        out = model.text_pass(batch["caption_ids"], batch["caption_attention_mask"])
        texts.append(F.normalize(model.text_proj(out.text_output[:, 0]), dim=-1))
    return torch.cat(images).float(), torch.cat(texts).float()


def recall_at_k(similarity: torch.Tensor, caption_image: torch.Tensor, ks: Iterable[int] = KS) -> dict[str, float]:
    """Image-to-text and text-to-image R@k (percent) of a `(N_images, N_captions)` similarity.

    Ties are broken against the query: a correct candidate counts only when strictly fewer wrong
    candidates score above or level with it, so a constant similarity scores no better than chance."""
    n_images, n_captions = similarity.shape
    own = caption_image[None, :] == torch.arange(n_images)[:, None]  # (N_images, N_captions)
    # image -> text: the rank of the best-scoring own caption = wrong captions scoring >= it
    best_own = similarity.masked_fill(~own, -math.inf).max(dim=1).values
    i2t_rank = (similarity.masked_fill(own, -math.inf) >= best_own[:, None]).sum(dim=1)
    # text -> image: wrong images scoring >= the caption's own image
    sim_t = similarity.T  # (N_captions, N_images)
    own_score = sim_t.gather(1, caption_image[:, None])
    t2i_rank = (sim_t.masked_fill(own.T, -math.inf) >= own_score).sum(dim=1)
    metrics = {}
    for k in ks:
        metrics[f"i2t_R@{k}"] = 100.0 * (i2t_rank < k).float().mean().item()
        metrics[f"t2i_R@{k}"] = 100.0 * (t2i_rank < k).float().mean().item()
    return metrics


def chance(caption_image: torch.Tensor, ks: Iterable[int] = KS) -> dict[str, float]:
    """R@k of a random ranking (percent) and ITM's 50%."""
    n_images = int(caption_image.max()) + 1
    n_captions = len(caption_image)
    per_image = torch.bincount(caption_image, minlength=n_images).float()
    out = {}
    for k in ks:
        # image -> text: 1 - P(none of the image's captions among k drawn without replacement)
        miss = [math.comb(n_captions - int(m), k) / math.comb(n_captions, k) if k <= n_captions - m else 0.0 for m in per_image]
        out[f"i2t_R@{k}"] = 100.0 * (1 - sum(miss) / n_images)
        out[f"t2i_R@{k}"] = 100.0 * min(k, n_images) / n_images
    out["itm_accuracy"] = 50.0
    return out


@torch.no_grad()
def itm_accuracy(model, data: RetrievalData, similarity: torch.Tensor) -> float:
    """ITM accuracy (percent) on every caption's positive, hard negative image and hard negative
    caption (see the module docstring); positives and negatives weigh equally."""
    caption_image = data.caption_image
    n_images, n_captions = similarity.shape
    own = caption_image[None, :] == torch.arange(n_images)[:, None]
    hard_image = similarity.masked_fill(own, -math.inf).argmax(dim=0)  # per caption: best other image
    hard_caption = similarity.masked_fill(own, -math.inf).argmax(dim=1)  # per image: best other caption
    pairs = [(int(caption_image[c]), c) for c in range(n_captions)]
    pairs += [(int(hard_image[c]), c) for c in range(n_captions)]
    pairs += [(i, int(hard_caption[i])) for i in range(n_images)]
    labels = torch.tensor([1] * n_captions + [0] * (n_captions + n_images))
    guesses = []
    for batch in data.batches(pairs):
        image = model.image_layernorm(batch["image_embeds"].to(model.image_layernorm.weight.dtype))
        out = model.itm_pass(
            image, batch.get("local_features"), batch.get("local_attention_mask"),
            batch["caption_ids"], batch["caption_attention_mask"], batch.get("spatial_ids"), batch.get("spatial_attention_mask"),
        )  # fmt: skip
        guesses.append(model.itm_head(out.visual_query_output).mean(dim=1).argmax(dim=-1))
    right = torch.cat(guesses) == labels
    return 100.0 * (right[labels == 1].float().mean() + right[labels == 0].float().mean()).item() / 2


def score_retrieval(model, data: RetrievalData) -> dict[str, float]:
    """Every metric of the module docstring for one split (percentages)."""
    model.eval()
    images, texts = embed(model, data)
    similarity = images @ texts.T
    metrics = recall_at_k(similarity, data.caption_image)
    if model.config.use_itm:
        metrics["itm_accuracy"] = itm_accuracy(model, data, similarity)
    return metrics


def evaluate_stage1(
    checkpoint: str | Path,
    captions: str | Path,
    images: str | Path,
    refiner_store: str | Path | None = None,
    image_features: str | Path | None = None,
    vision_model: str | Path | None = None,
    split: str | None = None,
    limit: int | None = None,
) -> dict[str, dict[str, float]]:
    """Load a stage-1 folder (`LyricsForPretraining.save_pretrained` + `mqformer_tokenizer/`) and
    score it: metric -> {"value": v, "chance": c}."""
    from lyrics.models.pretraining import LyricsForPretraining
    from lyrics.tokenization import load_mqformer_tokenizer

    checkpoint = Path(checkpoint)
    tokenizer_dir = checkpoint / "mqformer_tokenizer"
    if not (checkpoint / "model.safetensors").is_file() or not tokenizer_dir.is_dir():
        raise FileNotFoundError(f"{checkpoint} is not a stage-1 folder (model.safetensors and mqformer_tokenizer/ expected)")
    model = LyricsForPretraining.from_pretrained(str(checkpoint)).eval()
    tokenizer = load_mqformer_tokenizer(str(tokenizer_dir))
    data = load_retrieval_data(model, tokenizer, captions, images, refiner_store, image_features, vision_model, split=split, limit=limit)
    metrics = score_retrieval(model, data)
    base = chance(data.caption_image)
    return {name: {"value": value, "chance": base[name]} for name, value in metrics.items()}
