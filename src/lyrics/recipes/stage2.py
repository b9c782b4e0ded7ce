"""Stage 2 recipe: instruction tuning with LoRA (paper section 3.3).

    lyrics train configs/stage2/paper.yaml
    torchrun --nproc_per_node 8 -m lyrics.recipes.stage2 configs/stage2/paper.yaml

YAML sections:
  model:
    preset: runs/stage1/final     # a stage-1 checkpoint (its config is the preset) or paper / released / tiny
    overrides: {...}              # any LyricsConfig field (lora_r, spatial_text_in_prompt, ...)
    text_model: lmsys/vicuna-13b-v1.1
    vision_model: openai/clip-vit-large-patch14
    stage1: runs/stage1/final     # MQ-Former weights; null = Table 4's "w/o pre-training stage"
    blip2: null                   # ... or start the MQ-Former from BLIP-2 weights
    torch_dtype: null             # e.g. bfloat16 for the frozen LLM
    max_length: 512
    mqformer_tokenizer: null      # instruction-aware models: defaults to the stage-1 checkpoint's tokenizer
    chat_template: auto           # auto: the tokenizer's own chat template when it has one, else
                                  # Vicuna v1.1's; or tokenizer / vicuna
    system_prompt: "..."          # optional: replaces the template's default system prompt ("" = none)
    loss_reduction: token         # token: mean over every response token of the batch (LLaVA, BLIP-2);
                                  # sample: mean per sample, then over samples (a one-word answer
                                  # weighs as much as a caption)
  data:
    records: records.json         # `lyrics convert` output (one file or a list) ...
    mixture:                      # ... or Table 6-style weighted sources
      captioning: {records: cap.json, weight: 0.3}
      vqa: {records: vqa.json, weight: 0.5}
      ocr: null                   # a null source is left out (`--set data.mixture.ocr=null` drops one)
    images: root
    refiner_store: features/
    image_features: null          # cached encoder features (disables augmentation)
    group_by_length: false        # batches of similar prompt length (less padding; `data/grouping.py`)
    exclude_train: null           # Table 8 "w/o specific train split": datasets whose train split is left
                                  # out, by record source (gqa, vqav2, okvqa, textvqa, refcocog, flickr30k)
                                  # or mixture source name; recorded in OUTPUT_DIR/stage2_data.json
                                  # (`lyrics train ... --set data.exclude_train=[gqa]`)
    augment: {enabled: true}
  trainer: {...}                  # lyrics.training.trainer.TrainerConfig
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lyrics.recipes.common import DataSources, make_augment, open_feature_cache, open_refiner_store, typed_section
from lyrics.training.trainer import Trainer, TrainerConfig


@dataclass
class Stage2Model:
    """The `model:` section (see the module docstring)."""

    preset: str = "paper"
    overrides: dict = field(default_factory=dict)
    text_model: str | None = None
    vision_model: str | None = None
    stage1: str | None = None
    blip2: str | None = None
    torch_dtype: str | None = None
    max_length: int = 512
    mqformer_tokenizer: str | None = None
    chat_template: str = "auto"
    system_prompt: str | None = None
    loss_reduction: str = "token"


@dataclass
class Stage2Data(DataSources):
    """The `data:` section: one records file (or a list) or a weighted `mixture` of them."""

    records: str | list | None = None
    mixture: dict | None = None
    samples_per_epoch: int | None = None
    group_by_length: bool = False
    exclude_train: str | list | None = None


class Stage2Examples(torch.utils.data.Dataset):
    """Instruction samples -> rendered conversations + pixel values (or cached features) + refiner."""

    def __init__(self, samples, coordinate_format: str, image_processor=None, features=None):
        self.samples, self.fmt = samples, coordinate_format
        self.image_processor, self.features = image_processor, features

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.samples, "set_epoch"):
            self.samples.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        item: dict[str, Any] = {"conversations": sample.rendered(self.fmt), "refiner": sample.refiner, "image": None}
        if sample.image is not None:
            if self.features is not None:
                item["image_embeds"] = self.features.get(sample.image_key)
            else:
                item["image"] = self.image_processor(images=[sample.image], return_tensors="pt")["pixel_values"][0]
        return item


class Stage2Collator:
    """Stage-2 batch: tokenised conversations (loss on responses) plus the visual inputs of the
    images, in placeholder order (`LyricsProcessor.visual_inputs`)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        proc = self.processor
        spatial = [item["refiner"].spatial_text if item["refiner"] is not None else None for item in items]
        batch = proc.training_batch([item["conversations"] for item in items], spatial)
        with_image = [item for item in items if item.get("image") is not None or item.get("image_embeds") is not None]
        if with_image:
            cached = all(item.get("image_embeds") is not None for item in with_image)
            visual = proc.visual_inputs(
                records=[item["refiner"] for item in with_image],
                instructions=[proc.instructions(item["conversations"])[0] for item in with_image],
                image_embeds=torch.stack([item["image_embeds"] for item in with_image]) if cached else None,
                pixel_values=None if cached else torch.stack([item["image"] for item in with_image]),
            )
            batch.update(visual)
        return batch


def prompt_lengths(parts, store, spatial_text_in_prompt: bool) -> list[int]:
    """A length in characters per sample, in `ConcatDataset(parts)` order: the conversation's text,
    plus the refiner's spatial text where it goes into the prompt (read from the store's index, no
    features). Characters, not tokens: only the order matters for grouping, and no tokenizer runs."""
    lengths = []
    for part in parts:
        for record in part.records:
            size = sum(len(turn.get("value", "")) for turn in record.conversations)
            key = record.refiner or record.image
            if spatial_text_in_prompt and store is not None and key is not None and hasattr(store, "spatial_text"):
                try:
                    size += len(store.spatial_text(key))
                except KeyError:
                    pass  # the sample is skipped (and recorded) when it is loaded
            lengths.append(size)
    return lengths


DATA_RECORD = "stage2_data.json"


def write_data_record(folder: str | Path, record: dict[str, Any]) -> Path:
    """`stage2_data.json` in the run folder and the final checkpoint: which train splits the model
    saw (Table 8's ablation names its excluded datasets and how many records each removed)."""
    from lyrics.atomic import atomic_write_json

    Path(folder).mkdir(parents=True, exist_ok=True)
    return atomic_write_json(Path(folder) / DATA_RECORD, record)


class Stage2Recipe:
    def __init__(self, config: dict[str, Any]):
        self.cfg = config
        self.model_config = typed_section(Stage2Model, config.get("model"), "model")
        self.data_config = typed_section(Stage2Data, config.get("data"), "data")
        self.trainer_config = TrainerConfig.from_dict(config["trainer"])

    def setup(self) -> None:
        self._setup_model()
        self._setup_data()
        self.trainer = Trainer(
            self.trainer_config, self.model, self.dataset, Stage2Collator(self.processor),
            self.step_fn, sampler_fn=self.sampler_fn, on_epoch=self.dataset.set_epoch,
        )  # fmt: skip
        if self.trainer.accelerator.is_main_process:
            write_data_record(self.trainer_config.output_dir, self.data_record)

    def _setup_model(self) -> None:
        from accelerate.utils import set_seed
        from transformers import AutoTokenizer

        from lyrics.models.conditional_generation import LyricsForConditionalGeneration
        from lyrics.models.processing import ChatTemplate, LyricsProcessor, load_image_processor
        from lyrics.presets import load_config

        # Seeded before the model is built: new parameters (projection, LoRA, fresh heads) come from the
        # global RNG, and the Trainer seeds only after it is given the model.
        set_seed(self.trainer_config.seed)

        m = self.model_config
        for key in ("text_model", "vision_model"):
            if not getattr(m, key):
                raise ValueError(f"model.{key} is required for stage 2")
        reduction = m.loss_reduction  # checked before the LLM loads
        if reduction not in ("token", "sample"):
            raise ValueError(f"model.loss_reduction must be 'token' or 'sample', got {reduction!r}")
        config = load_config(m.preset, m.overrides or {})
        tokenizer = AutoTokenizer.from_pretrained(str(m.text_model))
        image_processor = load_image_processor(m.vision_model)
        mq_tokenizer = None
        mq_source = m.mqformer_tokenizer or (Path(m.stage1) / "mqformer_tokenizer" if m.stage1 else None)
        if mq_source and (Path(mq_source) / "tokenizer_config.json").is_file():
            mq_tokenizer = AutoTokenizer.from_pretrained(str(mq_source))
        if config.instruction_aware and mq_tokenizer is None:
            raise ValueError("instruction_aware needs model.mqformer_tokenizer (or a stage-1 checkpoint that holds it)")
        template = ChatTemplate(kind=m.chat_template, system=m.system_prompt)
        self.processor = LyricsProcessor(
            tokenizer,
            LyricsProcessor.config_for(config, max_length=m.max_length, template=template),
            image_processor,
            mq_tokenizer,
        )
        dtype = getattr(torch, m.torch_dtype) if m.torch_dtype else None
        self.model = LyricsForConditionalGeneration.from_components(config, m.text_model, m.vision_model, self.processor, dtype)
        if m.stage1:
            self.model.load_stage1(m.stage1)
        elif m.blip2:
            from lyrics.models.blip2_weights import load_mqformer_from_blip2

            print(load_mqformer_from_blip2(self.model.mqformer, m.blip2).summary())
        self.model.enable_lora()
        self.step_fn = lambda model, batch: model(**batch, loss_reduction=reduction, response_logits_only=True)

    def _setup_data(self) -> None:
        from lyrics.data.dataset import InstructionDataset
        from lyrics.data.mixing import TABLE8_ROW, exclude_train, parse_exclude

        data = self.data_config
        exclude = parse_exclude(data.exclude_train)
        removed: dict[str, int] = {}
        store = open_refiner_store(data, self.model.config)
        transform = make_augment(data, self.model.config)
        features = open_feature_cache(data)
        self.sampler_fn = None
        if data.mixture and all(source is None for source in data.mixture.values()):
            raise ValueError("data.mixture: every source is null")
        if bool(data.records) == bool(data.mixture):
            raise ValueError("data: give either `records` (a file or a list of files) or a `mixture`")
        if data.mixture:
            from lyrics.data.mixing import MixtureSampler

            names, files = [], []
            for name, source in data.mixture.items():
                if source is None:
                    continue
                if not isinstance(source, dict) or "records" not in source or set(source) - {"records", "weight"}:
                    raise ValueError(f"data.mixture.{name} must be {{records: FILE, weight: W}}, got {source!r}")
                names.append(name)
                files.append(source["records"])
            parts = [InstructionDataset(f, data.images, store, transform, seed=data.seed) for f in files]
            if exclude:  # before the sampler exists: excluded records are in no source, never drawn
                kept, removed = exclude_train({name: part.records for name, part in zip(names, parts)}, exclude)
                for part, name in zip(parts, names):
                    part.records = kept.get(name, [])
                names, parts = [n for n in names if n in kept], [p for n, p in zip(names, parts) if n in kept]
            samples = torch.utils.data.ConcatDataset(parts)
            samples.set_epoch = lambda epoch: [p.set_epoch(epoch) for p in parts]  # type: ignore[attr-defined]
            sizes = {name: len(part) for name, part in zip(names, parts)}
            weights = {name: float(data.mixture[name].get("weight", 1.0)) for name in names}
            per_epoch = data.samples_per_epoch

            def sampler_fn(epoch: int, rank: int, world: int):
                sampler = MixtureSampler(sizes, weights, seed=self.trainer_config.seed, samples_per_epoch=per_epoch, rank=rank, world_size=world)
                sampler.position = epoch * sampler.samples_per_epoch
                return sampler

            self.sampler_fn = sampler_fn
        else:
            samples = InstructionDataset(data.records, data.images, store, transform, seed=data.seed)
            if exclude:
                kept, removed = exclude_train({"records": samples.records}, exclude)
                samples.records = kept["records"]
            parts = [samples]
            names = ["records"]
        self.data_record = {
            "ablation": TABLE8_ROW if exclude else None, "exclude_train": exclude, "removed_records": removed,
            "records": {name: len(part) for name, part in zip(names, parts)},
        }  # fmt: skip
        self.dataset = Stage2Examples(samples, self.model.config.refiner_config.coordinate_format, self.processor.image_processor, features)
        if data.group_by_length:
            self.sampler_fn = self._grouped(self.sampler_fn, prompt_lengths(parts, store, self.model.config.spatial_text_in_prompt))

    def _grouped(self, base_fn, lengths: list[int]):
        """Wrap the epoch's sampler (the mixture's, or the trainer's own shuffling) in length grouping."""
        from lyrics.data.grouping import LengthGroupedSampler
        from lyrics.training.trainer import shuffled_sampler

        cfg = self.trainer_config

        def sampler_fn(epoch: int, rank: int, world: int):
            if base_fn is not None:
                base = base_fn(epoch, rank, world)
            else:
                base = shuffled_sampler(self.dataset, cfg.seed, epoch, rank, world)
            return LengthGroupedSampler(base, lengths, cfg.batch_size, seed=cfg.seed, epoch=epoch)

        return sampler_fn

    def train(self, resume: bool = False) -> Path:
        self.trainer.train(resume=resume)
        final = Path(self.trainer_config.output_dir) / "final"
        state = self.trainer.full_state_dict()  # collective: gathers FSDP / ZeRO-3 shards
        if self.trainer.accelerator.is_main_process:
            self.trainer.unwrapped_model().save_pretrained(final, processor=self.processor, state_dict=state)
            write_data_record(final, self.data_record)
        self.trainer.accelerator.wait_for_everyone()
        return final

    def cleanup(self) -> None:
        if hasattr(self, "trainer"):
            self.trainer.cleanup()


if __name__ == "__main__":
    from lyrics.recipes import main_for

    main_for("stage2")
