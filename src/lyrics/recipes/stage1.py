"""Stage 1 recipe: pre-train the MQ-Former with ITC + ITM + ICG + MSP (paper section 3.2).

    lyrics train configs/stage1/paper.yaml
    torchrun --nproc_per_node 8 -m lyrics.recipes.stage1 configs/stage1/paper.yaml

YAML sections:
  model:
    preset: paper                 # or released / tiny / a saved config directory
    overrides: {...}              # any LyricsConfig field (e.g. mqformer_config.num_grounding_query_tokens: 0)
    mqformer_tokenizer: google-bert/bert-base-uncased
    vision_model: openai/clip-vit-large-patch14   # frozen image encoder, loaded with from_pretrained
    init: null                    # a BLIP-2 / LAVIS / released checkpoint, or a stage-1 checkpoint directory
  data:
    captions: coco/annotations/captions_train2017.json   # COCO-format pairs ...
    images: coco/train2017
    shards: null                  # ... or webdataset tar shards (img2dataset layout), e.g. "laion/{00000..00999}.tar"
    refiner_store: features/coco  # `lyrics refine` output, joined by image key
    image_features: null          # cached image-encoder features (lyrics.training.features); disables augmentation
    augment: {enabled: true}      # 224 px random resized crop + horizontal flip, boxes and text kept consistent
    max_caption_tokens: 32
    max_spatial_tokens: 160
  trainer: {...}                  # lyrics.training.trainer.TrainerConfig
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lyrics.recipes.common import DataSources, make_augment, open_feature_cache, open_refiner_store, typed_section

from lyrics.training.collate import PretrainingCollator, PretrainingExample
from lyrics.training.trainer import Trainer, TrainerConfig

LOG_FIELDS = ("loss_itc", "loss_itm", "loss_icg", "loss_msp", "itc_accuracy")


class Stage1Examples(torch.utils.data.Dataset):
    """Caption pairs -> `PretrainingExample`s with pixel values (or cached encoder features)."""

    def __init__(self, pairs, image_processor=None, features=None):
        self.pairs, self.image_processor, self.features = pairs, image_processor, features

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.pairs, "set_epoch"):
            self.pairs.set_epoch(epoch)

    def __getitem__(self, index: int) -> PretrainingExample:
        pair = self.pairs[index]
        example = PretrainingExample(caption=pair.caption, record=pair.refiner, index=index)
        if self.features is not None:
            example.image_embeds = self.features.get(pair.key)
        else:
            example.pixel_values = self.image_processor(images=[pair.image], return_tensors="pt")["pixel_values"][0]
        return example


@dataclass
class Stage1Model:
    """The `model:` section (see the module docstring)."""

    preset: str = "paper"
    overrides: dict = field(default_factory=dict)
    mqformer_tokenizer: str = "google-bert/bert-base-uncased"
    vision_model: str | None = None
    init: str | None = None


@dataclass
class Stage1Data(DataSources):
    """The `data:` section: COCO-format caption pairs (`captions` + `images`) or webdataset `shards`."""

    captions: str | None = None
    shards: str | None = None
    split: str | None = None
    max_caption_tokens: int = 32
    max_spatial_tokens: int = 160


def build_config(model: Stage1Model, tokenizer, vision_config: dict[str, Any] | None):
    """LyricsConfig from the preset + overrides, with the MQ-Former vocabulary of `tokenizer` and the
    vision config of the image encoder that will feed it."""
    from lyrics.presets import load_config, merge
    from lyrics.tokenization import mqformer_token_ids

    overrides = merge({"mqformer_config": mqformer_token_ids(tokenizer)}, model.overrides or {})
    if vision_config is not None:
        overrides["vision_config"] = vision_config
    return load_config(model.preset, overrides)


def vision_config_of(path: str | Path) -> dict[str, Any]:
    """The vision tower's config of a checkpoint (a CLIP checkpoint gives its vision part)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path))
    config = getattr(config, "vision_config", config)
    return config.to_dict()


def load_encoder(path: str | None, feature_layer: int):
    from lyrics.models.image_encoder import ImageEncoder
    from lyrics.models.processing import load_image_processor

    if path is None:
        raise ValueError("model.vision_model is required unless data.image_features is given")
    encoder = ImageEncoder.from_pretrained(str(path), feature_layer).eval().requires_grad_(False)
    return encoder, load_image_processor(path)


class Stage1Recipe:
    """setup -> train -> cleanup; the loop itself is `lyrics.training.trainer.Trainer`."""

    def __init__(self, config: dict[str, Any]):
        self.cfg = config
        self.model_config = typed_section(Stage1Model, config.get("model"), "model")
        self.data_config = typed_section(Stage1Data, config.get("data"), "data")
        self.trainer_config = TrainerConfig.from_dict(config["trainer"])

    def setup(self) -> None:
        self._setup_model()
        self._setup_data()
        self.trainer = Trainer(
            self.trainer_config, self.model, self.dataset, self.collator, self._step,
            log_fields=LOG_FIELDS, on_epoch=self._on_epoch,
        )  # fmt: skip
        if self.encoder is not None:
            self.encoder.to(self.trainer.accelerator.device)

    def _setup_model(self) -> None:
        from accelerate.utils import set_seed

        from lyrics.models.pretraining import LyricsForPretraining
        from lyrics.tokenization import load_mqformer_tokenizer

        # Seeded before the model is built: new parameters (projection, LoRA, fresh heads) come from the
        # global RNG, and the Trainer seeds only after it is given the model.
        set_seed(self.trainer_config.seed)

        m, data = self.model_config, self.data_config
        self.tokenizer = load_mqformer_tokenizer(m.mqformer_tokenizer)
        self.encoder = self.image_processor = None
        vision = vision_config_of(m.vision_model) if m.vision_model else None
        self.config = build_config(m, self.tokenizer, vision)
        if not data.image_features:
            self.encoder, self.image_processor = load_encoder(m.vision_model, self.config.vision_feature_layer)
        init = m.init
        if init and (Path(init) / "config.json").is_file() and (Path(init) / "model.safetensors").is_file() and _is_stage1(init):
            self.model = LyricsForPretraining.from_pretrained(str(init), config=self.config)
        else:
            self.model = LyricsForPretraining(self.config)
            if init:
                print(self.model.load_blip2(init).summary())
        self.model.configure_trainable()

    def _setup_data(self) -> None:
        data = self.data_config
        store = open_refiner_store(data, self.model.config)
        features = open_feature_cache(data)
        transform = make_augment(data, self.config)
        if data.shards:
            from lyrics.data.webdata import WebDatasetPairs

            pairs = WebDatasetPairs(data.shards, refiner_store=store, transform=transform, seed=data.seed)
        else:
            from lyrics.data.pairs import CocoCaptionPairs

            if not (data.captions and data.images):
                raise ValueError("data: give `captions` and `images` (COCO-format pairs) or `shards` (webdataset)")
            pairs = CocoCaptionPairs(
                data.captions, data.images, refiner_store=store, transform=transform, seed=data.seed, split=data.split,
            )  # fmt: skip
        self.dataset = Stage1Examples(pairs, self.image_processor, features)
        self.collator = PretrainingCollator(
            self.tokenizer, self.config,
            max_caption_tokens=data.max_caption_tokens,
            max_spatial_tokens=data.max_spatial_tokens,
            seed=self.trainer_config.seed,
        )  # fmt: skip

    def _on_epoch(self, epoch: int) -> None:
        self.collator.epoch = epoch
        self.dataset.set_epoch(epoch)

    def _step(self, model, batch: dict[str, torch.Tensor]):
        if "pixel_values" in batch:
            with torch.no_grad():
                batch["image_embeds"] = self.encoder(batch.pop("pixel_values"))
        return model(**batch)

    def train(self, resume: bool = False) -> Path:
        self.trainer.train(resume=resume)
        final = Path(self.trainer_config.output_dir) / "final"
        state = self.trainer.full_state_dict()  # collective: gathers FSDP / ZeRO-3 shards
        if self.trainer.accelerator.is_main_process:
            model = self.trainer.unwrapped_model()
            model.save_pretrained(str(final), state_dict=state)
            self.tokenizer.save_pretrained(str(final / "mqformer_tokenizer"))
        self.trainer.accelerator.wait_for_everyone()
        return final

    def cleanup(self) -> None:
        if hasattr(self, "trainer"):
            self.trainer.cleanup()


def _is_stage1(path: str | Path) -> bool:
    import json

    data = json.loads((Path(path) / "config.json").read_text())
    return data.get("model_type") == "lyrics" and "LyricsForPretraining" in (data.get("architectures") or [])


if __name__ == "__main__":
    from lyrics.recipes import main_for

    main_for("stage1")
