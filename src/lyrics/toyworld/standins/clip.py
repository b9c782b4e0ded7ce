"""A tiny CLIP trained contrastively on toy images and captions: the stand-in for CLIP ViT-L/14.

Lyrics' image encoder is a frozen CLIP vision tower whose patch features the MQ-Former's visual
queries read (paper section 3.1). No pretrained CLIP can be downloaded here, so the quickstart
trains a small `transformers.CLIPModel` on the toy world's train split with CLIP's own symmetric
contrastive loss (`return_loss=True`) and saves it with `save_pretrained`, together with a
`CLIPProcessor` (PIL image processor + a BPE tokenizer trained on the captions). The rest of the
pipeline then loads it exactly as it would load `openai/clip-vit-large-patch14`:
`CLIPModel.from_pretrained(dir)`, `CLIPVisionModel.from_pretrained(dir)`,
`AutoProcessor.from_pretrained(dir)`.

The captions name colours, shapes, sizes, counts, relations and absolute locations, so matching
them forces the patch features to carry that information. `evaluate_retrieval` measures it on
held-out val images: caption -> image recall@1/5 against chance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lyrics.toyworld.standins.corpus import StandinData, ToyImage
from lyrics.toyworld.standins.training import TrainLog, epoch_order, save_atomically, seed_everything, train_loop, write_log
from lyrics.toyworld.standins.vocab import train_clip_tokenizer


@dataclass
class ClipStandinConfig:
    """Architecture and budget of the CLIP stand-in.

    The defaults cost about 28 s of CPU time (one core, including reading and preprocessing 2000
    images) and reach caption->image recall@1 of ~10% among 200 held-out images (chance 0.5%).
    Width pays more than depth here: 96 wide x 2 layers learned twice as well as 64 x 3 for the
    same cost. Patch 16 on 112 px gives a 7 x 7 grid (+ CLS) of global features.
    """

    image_size: int = 112
    patch_size: int = 16
    vision_hidden_size: int = 96
    vision_layers: int = 2
    text_hidden_size: int = 64
    text_layers: int = 2
    heads: int = 4
    projection_dim: int = 96
    max_text_length: int = 40
    tokenizer_vocab_size: int = 768
    steps: int = 150
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 16
    weight_decay: float = 0.05
    seed: int = 0
    eval_images: int = 200

    @classmethod
    def fast(cls, **overrides) -> "ClipStandinConfig":
        """A budget for `lyrics quickstart --fast` (a few seconds)."""
        values = dict(vision_layers=1, text_layers=1, steps=40, batch_size=32, warmup=4, eval_images=60)
        values.update(overrides)
        return cls(**values)


def build_processor(tokenizer, config: ClipStandinConfig):
    from transformers import CLIPImageProcessorPil, CLIPProcessor

    # PIL backend: there is no torchvision here. Resize the 224 px scene to `image_size`; the crop
    # is then a no-op (scenes are square) but kept so real CLIP preprocessing is what runs.
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": config.image_size}, crop_size={"height": config.image_size, "width": config.image_size}
    )
    tokenizer.model_max_length = config.max_text_length
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_model(config: ClipStandinConfig, tokenizer):
    from transformers import CLIPConfig, CLIPModel

    text = dict(
        vocab_size=len(tokenizer), hidden_size=config.text_hidden_size, intermediate_size=4 * config.text_hidden_size,
        num_hidden_layers=config.text_layers, num_attention_heads=config.heads, max_position_embeddings=config.max_text_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        hidden_size=config.vision_hidden_size, intermediate_size=4 * config.vision_hidden_size,
        num_hidden_layers=config.vision_layers, num_attention_heads=config.heads, image_size=config.image_size,
        patch_size=config.patch_size,
    )
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=config.projection_dim))


def pixel_tensor(processor, paths: list[Path], batch: int = 256) -> torch.Tensor:
    """`(N, 3, S, S)` float pixel values through the processor (as inference will compute them)."""
    chunks = []
    for start in range(0, len(paths), batch):
        images = [Image.open(p).convert("RGB") for p in paths[start : start + batch]]
        chunks.append(processor(images=images, return_tensors="pt")["pixel_values"])
    return torch.cat(chunks) if chunks else torch.zeros(0)


def _text_batch(processor, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    return processor.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def _features(output) -> torch.Tensor:
    # transformers 5 returns a model output whose `pooler_output` holds the projected embedding;
    # older versions return the tensor itself.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def evaluate_retrieval(model, processor, images: list[ToyImage], pixels: torch.Tensor | None = None) -> dict[str, float]:
    """Caption -> image retrieval among `images` (every caption of every image is a query).

    Returns recall@1 and @5 and their chance levels (1/N and 5/N).
    """
    model.eval()
    if pixels is None:
        pixels = pixel_tensor(processor, [img.path for img in images])
    image_emb = torch.nn.functional.normalize(_features(model.get_image_features(pixel_values=pixels)), dim=-1)
    texts, owners = [], []
    for k, img in enumerate(images):
        texts += img.captions
        owners += [k] * len(img.captions)
    batch = _text_batch(processor, texts, processor.tokenizer.model_max_length)
    text_emb = torch.nn.functional.normalize(_features(model.get_text_features(**batch)), dim=-1)
    ranks = (text_emb @ image_emb.T).argsort(dim=-1, descending=True)
    target = torch.tensor(owners)[:, None]
    hits = ranks == target
    n = len(images)
    return {
        "recall@1": float(hits[:, :1].any(-1).float().mean()),
        "recall@5": float(hits[:, :5].any(-1).float().mean()),
        "chance@1": 1.0 / n,
        "chance@5": min(1.0, 5.0 / n),
        "queries": len(texts),
        "images": n,
    }


def train_clip_standin(
    world_dir: str | Path, out_dir: str | Path, config: ClipStandinConfig | None = None, data: StandinData | None = None
) -> TrainLog:
    """Train the CLIP stand-in on the world's train split, save it to `out_dir`, return its log.

    `out_dir` gets `config.json`, `model.safetensors`, the processor and tokenizer files, and
    `train_log.json` (loss curve, budget, held-out retrieval). Deterministic for a given seed on CPU.
    `data` lets a caller that trains several stand-ins read the world once.
    """
    config = config or ClipStandinConfig()
    generator = seed_everything(config.seed)
    data = data or StandinData.load(world_dir)
    train, val = data.train, data.val[: config.eval_images]
    tokenizer = train_clip_tokenizer((c for img in train for c in img.captions), vocab_size=config.tokenizer_vocab_size)
    processor = build_processor(tokenizer, config)
    model = build_model(config, tokenizer)
    pixels = pixel_tensor(processor, [img.path for img in train])
    order = epoch_order(len(train), config.steps * config.batch_size, generator)
    caption_pick = np.random.default_rng(config.seed)

    def batches(step: int) -> dict[str, torch.Tensor]:
        idx = order[step * config.batch_size : (step + 1) * config.batch_size].tolist()
        texts = [train[i].captions[int(caption_pick.integers(len(train[i].captions)))] for i in idx]
        batch = _text_batch(processor, texts, config.max_text_length)
        batch["pixel_values"] = pixels[idx]
        return batch

    def loss_fn(model, batch):
        return model(**batch, return_loss=True).loss

    log = train_loop("clip_standin", asdict(config), model, batches, loss_fn, config.steps, config.lr, config.warmup, config.weight_decay)
    if val:
        log.metrics["val_retrieval"] = evaluate_retrieval(model, processor, val)
    log.metrics["uniform_loss"] = float(np.log(config.batch_size))  # contrastive loss of an untrained model

    log.world = data.world

    def write(directory: Path) -> None:
        model.save_pretrained(str(directory))
        processor.save_pretrained(str(directory))
        write_log(directory, log)

    save_atomically(out_dir, write)
    return log
