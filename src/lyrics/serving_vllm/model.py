"""Lyrics as a vLLM model (vLLM 0.32's multimodal interface): processor, dummy inputs and the model.

The processing side (vLLM's front end, and the engine core for memory profiling) runs per image what
`LyricsPipeline` runs: the checkpoint's refiner (`checkpoint_refiner_config`), the image processor,
and the processor's prompt rules. A chat prompt reaches it as token ids built by the plugin's
renderer (`lyrics.serving_vllm.renderer`, `--tokenizer-mode lyrics`, which the processor requires):
`lyrics serve`'s ids, regions rendered, with one `<image>` token; the prompt update replaces that
token by `num_image_tokens` image tokens followed, for a checkpoint trained with
`spatial_text_in_prompt`, by the refiner's spatial text ("\\nObjects: <br><T>..</T><Bbox>..</Box></br>\\n",
tokenised as the processor tokenises that line, on its own), which is not embedded (`is_embed` marks
only the image tokens). The refiner's local features travel with the image as model inputs.

The model side runs the project's own modules: `ImageEncoder` (the frozen vision tower), the trained
`image_layernorm`, `MQFormerModel` and `language_projection`, through
`LyricsForConditionalGeneration.visual_tokens` itself (one image's Nv + Ng soft tokens, in float32
as the project keeps the MQ-Former), and vLLM's own `LlamaForCausalLM` (or whichever decoder
`text_config.architectures` names) for the LLM, with its paged KV cache and batching.

Weights: `lyrics_model.safetensors` at the folder's root (vLLM's primary source), `language_model/`
and `vision_model/` as secondary sources (`secondary_weights`).

LoRA (`SupportsLoRA`, `enable_lora`): a stage-2 adapter applies to the decoder alone, on a base
folder written by `lyrics.serving_vllm.lora.base_folder`; `get_mm_mapping` tells vLLM's LoRA manager
which module is the language model, and `hf_to_vllm_mapper` where the adapter's module names sit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from transformers import BatchFeature

from vllm.config import VllmConfig
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.inputs import MultiModalDataDict
from vllm.model_executor.model_loader.default_loader import DefaultModelLoader
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
    PromptUpdateDetails,
)
from vllm.model_executor.models.interfaces import MultiModalEmbeddings, SupportsLoRA, SupportsMultiModal
from vllm.model_executor.models.module_mapping import MultiModelKeys
from vllm.model_executor.models.utils import WeightsMapper, init_vllm_registered_model, maybe_prefix
from vllm.exceptions import VLLMValidationError
from vllm.multimodal.processing.inputs import ProcessorInputs
from vllm.sequence import IntermediateTensors

from lyrics.serving_vllm.folder import check_merged_folder, image_prompt_ids
from lyrics.serving_vllm.regions import region_options
from lyrics.serving_vllm import TOKENIZER_MODE

from lyrics.configuration import LyricsConfig  # noqa: E402

from lyrics.models.conditional_generation import LyricsForConditionalGeneration as _LyricsModel  # noqa: E402
from lyrics.models.image_encoder import ImageEncoder  # noqa: E402
from lyrics.models.mqformer import MQFormerModel  # noqa: E402
from lyrics.models.processing import pad_local_features  # noqa: E402

# Per-image model inputs the processor makes (besides `pixel_values`): the refiner's objects, and
# the token ids that replace the image's `<image>` (the image tokens, then any spatial text).
LOCAL_FEATURES = "local_features"
PROMPT_IDS = "lyrics_prompt_ids"


class LyricsFrontEnd:
    """The checkpoint's `LyricsProcessor` and live `VisualRefiner`, one per folder and process."""

    def __init__(self, folder: str, config: Any):
        from lyrics.inference.inputs import MAX_ASPECT_RATIO
        from lyrics.models.processing import LyricsProcessor
        from lyrics.refiner.pipeline import VisualRefiner
        from lyrics.refiner.provenance import checkpoint_refiner_config

        self.folder = check_merged_folder(folder)
        self.processor = LyricsProcessor.from_pretrained(self.folder).sync_with(config)
        refiner_config = checkpoint_refiner_config(config, where=str(self.folder))
        self.refiner = VisualRefiner.from_config(refiner_config)
        self.max_image_pixels = config.refiner_config.max_image_pixels
        self.max_aspect_ratio = MAX_ASPECT_RATIO
        # how the renderer writes a request's regions (`lyrics.inference.regions`), as `LyricsPipeline` does
        self.coordinate_format, self.spatial_style = config.refiner_config.coordinate_format, config.refiner_config.spatial_format

    def image_inputs(self, images: Sequence[Any]) -> dict[str, Any]:
        """Per image, as `LyricsPipeline` prepares it: pixel values, the refiner's local features
        (at most `max_objects`, unpadded) and the ids that take the `<image>` token's place."""
        from lyrics.inference.inputs import check_aspect_ratio

        rgb = []
        for i, image in enumerate(images):
            if image.width * image.height > self.max_image_pixels:
                raise ValueError(f"image {i}: {image.width}x{image.height} pixels is more than the limit of {self.max_image_pixels}")
            check_aspect_ratio(image.width, image.height, self.max_aspect_ratio, f"image {i}")
            rgb.append(image.convert("RGB") if image.mode != "RGB" else image)
        proc = self.processor
        records = self.refiner(rgb, [str(i) for i in range(len(rgb))])
        out: dict[str, Any] = {"pixel_values": proc.pixel_values(rgb)}
        dim, limit = proc.config.local_feature_size, proc.config.max_objects
        if dim:
            out[LOCAL_FEATURES] = [r.local_features.float()[:limit] if limit is not None else r.local_features.float() for r in records]
        out[PROMPT_IDS] = [torch.tensor(image_prompt_ids(proc, r.spatial_text), dtype=torch.long) for r in records]
        return out


_FRONT_ENDS: dict[str, LyricsFrontEnd] = {}


def _front_end(folder: str, config: Any) -> LyricsFrontEnd:
    """One front end per folder and process (vLLM builds its processor in several places)."""
    if folder not in _FRONT_ENDS:
        _FRONT_ENDS[folder] = LyricsFrontEnd(folder, config)
    return _FRONT_ENDS[folder]


class LyricsProcessingInfo(BaseProcessingInfo):
    def get_hf_config(self) -> Any:
        return self.ctx.get_hf_config(LyricsConfig)

    @property
    def front_end(self) -> LyricsFrontEnd:
        return _front_end(str(self.ctx.model_config.model), self.get_hf_config())

    def get_default_tok_params(self):
        """Text prompts are tokenised without the tokenizer's own special tokens, as
        `LyricsProcessor.encode` tokenises its pieces (chat prompts arrive as ids from the renderer,
        with every special token the processor writes). vLLM otherwise adds them for multimodal
        models. A plain-text (completions) prompt must therefore carry its bos."""
        return dataclasses.replace(super().get_default_tok_params(), add_special_tokens=False)

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": 1}  # one image per conversation, as `lyrics serve`

    def get_num_image_tokens(self) -> int:
        return self.get_hf_config().num_image_tokens

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        return {"image": self.get_num_image_tokens()}  # embeddings per image; spatial text is plain text


class LyricsDummyInputsBuilder(BaseDummyInputsBuilder[LyricsProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return self.info.get_hf_config().image_token * mm_counts.get("image", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options: MultiModalDummyOptions) -> MultiModalDataDict:
        size = self.info.get_hf_config().vision_config.image_size
        images = self._get_dummy_images(width=size, height=size, num_images=mm_counts.get("image", 0), overrides=mm_options.get("image"))
        return {"image": images}


class LyricsMultiModalProcessor(BaseMultiModalProcessor[LyricsProcessingInfo]):
    def __init__(self, info: LyricsProcessingInfo, dummy_inputs: LyricsDummyInputsBuilder) -> None:
        super().__init__(info, dummy_inputs)
        mode = info.ctx.model_config.tokenizer_mode
        if mode != TOKENIZER_MODE:
            raise ValueError(
                f"{info.ctx.model_config.model}: a Lyrics model is served with --tokenizer-mode {TOKENIZER_MODE} (got {mode!r}): "
                "its renderer builds each chat prompt by the rules the model was trained with; "
                "`python -m lyrics.serving_vllm serve FOLDER` adds it"
            )
        info.front_end  # refuse a folder that is not a merged Lyrics model before any request

    def apply(self, inputs: ProcessorInputs, timing_ctx: Any):
        """vLLM's processing, with the request's `regions` / `region_format` taken out of the kwargs
        (checked again: any other key is refused). The renderer has written them into the prompt,
        so the image's processing, its cache entry and its hash do not depend on them."""
        from lyrics.inference.inputs import InputError

        try:
            region_options(inputs.hf_processor_mm_kwargs)
        except InputError as exc:  # vLLM answers it with a 400 naming `param`
            raise VLLMValidationError(exc.message, parameter=exc.param) from None
        return super().apply(dataclasses.replace(inputs, hf_processor_mm_kwargs={}), timing_ctx)

    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        images = list(hf_data.get("images") or [])
        return BatchFeature(self.info.front_end.image_inputs(images))

    def _get_mm_fields_config(self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]) -> Mapping[str, MultiModalFieldConfig]:
        fields = {"pixel_values": MultiModalFieldConfig.batched("image"), PROMPT_IDS: MultiModalFieldConfig.batched("image", keep_on_cpu=True)}
        if LOCAL_FEATURES in hf_inputs:
            fields[LOCAL_FEATURES] = MultiModalFieldConfig.batched("image")
        return fields

    def _get_prompt_updates(
        self, mm_items: MultiModalDataItems, hf_processor_mm_kwargs: Mapping[str, object], out_mm_kwargs: MultiModalKwargsItems
    ) -> Sequence[PromptUpdate]:
        image_token_id = self.info.get_hf_config().image_token_index

        def replacement(item_idx: int) -> PromptUpdateDetails:
            ids = out_mm_kwargs["image"][item_idx][PROMPT_IDS].data.tolist()
            return PromptUpdateDetails.select_token_id(ids, image_token_id)

        return [PromptReplacement(modality="image", target=[image_token_id], replacement=replacement)]


@MULTIMODAL_REGISTRY.register_processor(LyricsMultiModalProcessor, info=LyricsProcessingInfo, dummy_inputs=LyricsDummyInputsBuilder)
class LyricsForConditionalGeneration(nn.Module, SupportsMultiModal, SupportsLoRA):
    """A merged Lyrics model in vLLM: the project's vision path and vLLM's decoder.

    `packed_modules_mapping` is left empty (SupportsLoRA's default) on purpose: vLLM then takes the
    decoder's own (`LlamaForCausalLM`: q/k/v into qkv_proj, gate/up into gate_up_proj), whichever
    decoder `text_config.architectures` names."""

    # A stage-2 adapter names modules relative to the bare LLM ("model.layers.N.self_attn.q_proj");
    # here the decoder is `language_model`. vLLM applies this mapper to LoRA names only (its LoRA
    # loader, and the quantisation config's layer lists); `load_weights` below does not use it, so
    # the base weights load as before.
    hf_to_vllm_mapper = WeightsMapper(orig_to_new_prefix={"model.": "language_model.model."})

    # The project's own computation of an image's soft tokens (encoder -> ln_vision -> MQ-Former ->
    # projection); it reads the attributes set below under the same names as the project's model.
    visual_tokens = _LyricsModel.visual_tokens
    _query_ablation = None

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return "<image>"
        raise ValueError("Lyrics takes images only")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config = vllm_config.model_config.hf_config
        folder = check_merged_folder(vllm_config.model_config.model)
        if config.image_token != "<image>":
            raise ValueError(f"{folder}/config.json: image_token {config.image_token!r}; the plugin serves '<image>'")
        if config.image_token_index is None:
            raise ValueError(f"{folder}/config.json has no image_token_index (a processor was never attached)")
        self.config = config
        self.decoder_dtype = vllm_config.model_config.dtype
        mq = config.mqformer_config
        with self._mark_tower_model(vllm_config, "image"):
            # float32, as the project runs them (`_keep_in_fp32_modules`; the tower at its saved dtype,
            # float32 for every tower the project writes), whatever dtype the decoder is served in.
            self.image_encoder = ImageEncoder(config.vision_config, config.vision_feature_layer).float()
            self.image_layernorm = nn.LayerNorm(mq.encoder_hidden_size).float()
            self.mqformer = MQFormerModel(mq).float()
            self.language_projection = nn.Linear(mq.hidden_size, config.text_config.hidden_size).float()
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config, hf_config=config.text_config, prefix=maybe_prefix(prefix, "language_model")
            )
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors
        revision = vllm_config.model_config.revision
        self.secondary_weights = [
            DefaultModelLoader.Source(str(folder), revision, subfolder="language_model", prefix="language_model."),
            DefaultModelLoader.Source(str(folder), revision, subfolder="vision_model", prefix="image_encoder.vision_model."),
        ]

    def get_mm_mapping(self) -> MultiModelKeys:
        """The decoder is where LoRA applies; the vision path is the project's own torch modules,
        which vLLM's LoRA layers do not wrap."""
        return MultiModelKeys.from_string_field(
            language_model="language_model", connector="language_projection", tower_model=["image_encoder", "image_layernorm", "mqformer"]
        )

    # --- images -----------------------------------------------------------------------------------
    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        from lyrics.models.conditional_generation import VisualInputs

        pixel_values = kwargs.get("pixel_values")
        if pixel_values is None:
            return []
        if isinstance(pixel_values, (list, tuple)):
            pixel_values = torch.stack(list(pixel_values))
        visual = VisualInputs(pixel_values=pixel_values.float())
        features = kwargs.get(LOCAL_FEATURES)
        if features is not None and self.config.mqformer_config.num_grounding_query_tokens:
            features = list(features) if not isinstance(features, torch.Tensor) else list(features.unbind(0))
            dim = self.config.mqformer_config.local_feature_size
            local, mask = pad_local_features([f.float() for f in features], dim, self.config.refiner_config.max_objects)
            visual.local_features, visual.local_attention_mask = local.to(pixel_values.device), mask.to(pixel_values.device)
        with torch.no_grad():
            tokens = self.visual_tokens(visual)
        return list(tokens.to(self.decoder_dtype).unbind(0))

    # --- decoding ---------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor | IntermediateTensors:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    # --- weights ----------------------------------------------------------------------------------
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """The LLM's weights go to vLLM's decoder; everything else (tower, ln_vision, MQ-Former,
        projection) must match this model's own parameters exactly, as `from_pretrained` demands."""
        rest: dict[str, torch.Tensor] = {}
        llm_prefix = "language_model."

        def llm_weights():
            for name, tensor in weights:
                if name.startswith(llm_prefix):
                    yield name[len(llm_prefix) :], tensor
                else:
                    rest[name] = tensor

        loaded = {llm_prefix + name for name in self.language_model.load_weights(llm_weights())}
        own = {name: p for name, p in self.named_parameters() if not name.startswith(llm_prefix)}
        # A tower saved by `CLIPVisionModel.save_pretrained` keys its tensors `vision_model.*` (the
        # quickstart's stand-in); one saved from the bare transformer does not. Both load in
        # transformers, so both load here.
        doubled = "image_encoder.vision_model.vision_model."
        for name in [n for n in rest if n.startswith(doubled)]:
            short = "image_encoder.vision_model." + name[len(doubled) :]
            if short in own and name not in own:
                rest[short] = rest.pop(name)
        own.update({name: b for name, b in self.named_buffers() if not name.startswith(llm_prefix) and name in rest})
        unexpected = sorted(set(rest) - set(own))
        missing = sorted(name for name in own if name not in rest)
        if unexpected or missing:
            raise ValueError(
                f"{self.secondary_weights[0].model_or_path}: the vision weights do not match the config "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        with torch.no_grad():
            for name, target in own.items():
                source = rest[name]
                if source.shape != target.shape:
                    raise ValueError(f"{name}: checkpoint shape {tuple(source.shape)}, model {tuple(target.shape)}")
                target.copy_(source.to(target.dtype))
        return loaded | set(own)
