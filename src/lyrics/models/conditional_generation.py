"""Stage 2: bootstrapping vision-to-language generative learning (paper section 3.3, Figure 1 right).

Frozen image encoder features and refiner local features go through the MQ-Former; a trainable
linear projection turns every query output (32 visual + 32 grounding in the paper) into a soft
visual token in the LLM's embedding space; the tokens replace the expanded `<image>` placeholder of
the prompt (see `lyrics.models.processing`). The LLM is any transformers causal LM (LLaMA / Vicuna
first) adapted with LoRA through PEFT; the MQ-Former and the projection train too (paper; the released
code freezes them: `train_mqformer=False`).

A checkpoint stores only what training changed: `config.json`, `lyrics_model.safetensors` (MQ-Former,
`ln_vision`, projection), `adapter/` (PEFT LoRA) and the processor (tokenizers); the frozen LLM and
image encoder are referenced by `text_model_name_or_path` / `vision_model_name_or_path`.
`save_merged` (CLI `lyrics merge`) folds LoRA into the LLM and writes a standalone directory.

Length: the stage-2 model in one file, transformers style: building from pretrained parts, LoRA and
trainability, forward and generate, and persistence (save/load/merge) belong to one class.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import inspect
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

from lyrics.atomic import atomic_directory
from lyrics.configuration import LyricsConfig
from lyrics.models.image_encoder import ImageEncoder
from lyrics.models.loading import load_pretrained
from lyrics.models.mqformer import MQFormerModel
from lyrics.models.pretraining import LyricsPreTrainedModel
from lyrics.models.processing import IGNORE_INDEX

TRAINED_WEIGHTS = "lyrics_model.safetensors"
TRAINED_PREFIXES = ("image_layernorm.", "mqformer.", "language_projection.")
# Values of `LyricsForConditionalGeneration.query_ablation` (None: the model as trained).
QUERY_ABLATIONS = (None, "zero_grounding")


def grow_vocabulary(llm: nn.Module, vocab: int) -> bool:
    """Give `llm` rows for tokens added to its tokenizer (`<image>`), each the mean of the old rows;
    False when it already has `vocab` rows.

    transformers' own resize draws the new rows at random; rows that a checkpoint can rebuild
    exactly from the base LLM mean the adapter need not carry the whole embedding matrix and output
    layer (PEFT saves both when it sees a resized vocabulary: some 650 MB per checkpoint for a 13B
    model), and loading reproduces the trained model bit for bit.
    """
    old = llm.get_input_embeddings().num_embeddings
    if old >= vocab:
        return False
    llm.resize_token_embeddings(vocab, mean_resizing=False)
    layers = [llm.get_input_embeddings(), llm.get_output_embeddings()]
    with torch.no_grad():
        for layer in {id(lay.weight): lay for lay in layers if lay is not None}.values():
            layer.weight[old:] = layer.weight[:old].mean(dim=0)
            bias = getattr(layer, "bias", None)
            if bias is not None:
                bias[old:] = bias[:old].mean()
    return True


@contextlib.contextmanager
def quiet_peft():
    """PEFT reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model; the
    FutureWarning is about PEFT's code, not the user's, so it is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _resolve(base: Path, name: str | None) -> str | None:
    if name is None:
        return None
    candidate = base / name
    return str(candidate) if not os.path.isabs(name) and candidate.exists() else name


@dataclass
class VisualInputs:
    """The images' side of a batch, one entry per `<image>` placeholder in order of appearance
    (`LyricsProcessor.visual_inputs` builds its fields; `forward` and `generate` take them by name
    or the object as `visual=`).

    Args:
        pixel_values (`(B_img, 3, H, W)`) or image_embeds (`(B_img, Ni, Di)`): the images, or their
            cached image-encoder features.
        local_features (`(B_img, K, Dl)`), local_attention_mask (`(B_img, K)`): the refiner's objects.
        qformer_input_ids, qformer_attention_mask (`(B_img, T)`): per image, its instruction in the
            MQ-Former vocabulary (`instruction_aware` models).
    """

    pixel_values: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    local_features: torch.Tensor | None = None
    local_attention_mask: torch.Tensor | None = None
    qformer_input_ids: torch.Tensor | None = None
    qformer_attention_mask: torch.Tensor | None = None

    @classmethod
    def take(cls, kwargs: dict) -> tuple["VisualInputs", dict]:
        """Split keyword arguments into the visual inputs (its fields, or one `visual=`) and the rest."""
        rest = dict(kwargs)
        given = rest.pop("visual", None)
        named = {f.name: rest.pop(f.name) for f in dataclasses.fields(cls) if f.name in rest}
        if given is not None:
            if any(v is not None for v in named.values()):
                raise ValueError(f"give visual= or its fields ({sorted(named)}), not both")
            return given, rest
        return cls(**named), rest


class LyricsForConditionalGeneration(LyricsPreTrainedModel):
    r"""Image encoder -> MQ-Former -> projection -> LLM (+ LoRA).

    Args:
        config (`LyricsConfig`): the whole model.
        language_model (*optional*): an already loaded causal LM (e.g. from `from_pretrained`); built
            from `config.text_config` otherwise.
        vision_model (*optional*): an already loaded vision tower; built from `config.vision_config`
            otherwise.
    """

    _keep_in_fp32_modules = ["mqformer", "image_layernorm"]

    def __init__(self, config: LyricsConfig, language_model: nn.Module | None = None, vision_model: nn.Module | None = None):
        super().__init__(config)
        mq = config.mqformer_config
        self.image_encoder = None if vision_model is not None else ImageEncoder(config.vision_config, config.vision_feature_layer)
        self.image_layernorm = nn.LayerNorm(mq.encoder_hidden_size)
        self.mqformer = MQFormerModel(mq)
        self.language_projection = nn.Linear(mq.hidden_size, config.text_config.hidden_size)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config) if language_model is None else None
        self.post_init()
        # Pretrained parts are attached after post_init so that nothing re-initialises them.
        if vision_model is not None:
            self.image_encoder = ImageEncoder(config.vision_config, config.vision_feature_layer, vision_model)
        if language_model is not None:
            self.language_model = language_model
        self.image_encoder.requires_grad_(False)
        # Sharding / placement units (FSDP's auto-wrap, `device_map`): the MQ-Former's layer (collected
        # by post_init) and the pretrained parts' own layers, attached after it.
        for part in (self.language_model, self.image_encoder.vision_model):
            self._no_split_modules.update(getattr(part, "_no_split_modules", None) or [])
        # An inference-time analysis switch (see `query_ablation`), never part of the config.
        self._query_ablation: str | None = None

    # --- building -------------------------------------------------------------------------------
    @classmethod
    def from_components(
        cls,
        config: LyricsConfig,
        text_model: str,
        vision_model: str | None = None,
        processor=None,
        torch_dtype: torch.dtype | None = None,
    ) -> "LyricsForConditionalGeneration":
        """Assemble a fresh stage-2 model from pretrained parts (paths or hub ids) with transformers'
        `from_pretrained`; the MQ-Former starts random (load stage-1 weights with `load_stage1`). A
        checkpoint lacking any weight of the LLM or the tower is refused (`MissingWeightsError`)."""
        config = copy.deepcopy(config)
        config.text_model_name_or_path = str(text_model)
        config.vision_model_name_or_path = str(vision_model) if vision_model is not None else None
        llm = load_pretrained(AutoModelForCausalLM, text_model, dtype=torch_dtype)
        config.text_config = llm.config
        vision = ImageEncoder.from_pretrained(str(vision_model), config.vision_feature_layer).vision_model if vision_model else None
        if vision is not None:
            config.vision_config = vision.config
            config.mqformer_config.encoder_hidden_size = vision.config.hidden_size
        model = cls(config, language_model=llm, vision_model=vision)
        if processor is not None:
            model.attach_processor(processor)
        return model

    def attach_processor(self, processor) -> None:
        """Make room for the processor's `<image>` token in the LLM vocabulary and remember its id."""
        self.config.image_token_index = processor.image_token_id
        if processor.config.num_image_tokens != self.config.num_image_tokens:
            raise ValueError(
                f"processor expands <image> into {processor.config.num_image_tokens} tokens, "
                f"the model produces {self.config.num_image_tokens}"
            )
        vocab = len(processor.tokenizer)
        if grow_vocabulary(self.llm, vocab):
            self.config.text_config.vocab_size = vocab

    def load_stage1(self, path: str | Path) -> list[str]:
        """Take the MQ-Former and `ln_vision` of a stage-1 (`LyricsForPretraining`) checkpoint."""
        from safetensors.torch import load_file

        path = Path(path)
        files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
        if not files:
            raise FileNotFoundError(f"{path}: no safetensors weights of a stage-1 checkpoint")
        state = {}
        for file in files:
            state.update(load_file(str(file)))
        wanted = {k: v for k, v in state.items() if k.startswith(("mqformer.", "image_layernorm."))}
        if not any(k.startswith("mqformer.") for k in wanted):
            raise ValueError(f"{path}: not a Lyrics stage-1 checkpoint (no mqformer.* weights)")
        missing, unexpected = self.load_state_dict(wanted, strict=False)
        missing = [k for k in missing if k.startswith(TRAINED_PREFIXES[:2])]
        if unexpected or missing:
            raise ValueError(f"{path}: stage-1 weights do not fit this model (missing {missing[:5]}, unexpected {unexpected[:5]})")
        return sorted(wanted)

    # --- LoRA and trainability -------------------------------------------------------------------
    @property
    def llm(self) -> nn.Module:
        """The causal LM underneath any PEFT wrapper."""
        model = self.language_model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def get_input_embeddings(self) -> nn.Module:
        """The LLM's token embeddings (where the soft visual tokens are written in)."""
        return self.llm.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module | None:
        return self.llm.get_output_embeddings()

    def enable_lora(self) -> None:
        from peft import LoraConfig, get_peft_model

        if hasattr(self.language_model, "peft_config"):
            return
        cfg = self.config
        lora = LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM",
            modules_to_save=list(cfg.lora_modules_to_save) or None,
        )  # fmt: skip
        with quiet_peft():
            self.language_model = get_peft_model(self.language_model, lora)
        self.configure_trainable()

    def configure_trainable(self) -> None:
        """Frozen: image encoder, LLM base weights. Trainable: LoRA, and the MQ-Former, `ln_vision` and
        projection when `train_mqformer` (paper section 4), except the MQ-Former parts whose outputs
        stage 2 never reads (its LM head, text-only embeddings and FFNs: `unused_without_text_outputs`)."""
        unused = tuple(f"mqformer.{p}" for p in self.mqformer.unused_without_text_outputs(self.config.instruction_aware))
        for name, param in self.named_parameters():
            if "lora_" in name or ".modules_to_save." in name:
                param.requires_grad = True
            elif name.startswith(TRAINED_PREFIXES):
                param.requires_grad = self.config.train_mqformer and not name.startswith(unused)
            else:
                param.requires_grad = False

    # --- forward ------------------------------------------------------------------------------
    @property
    def query_ablation(self) -> str | None:
        """Inference-time ablation of the soft visual tokens: None (default, the model as trained) or
        "zero_grounding".

        "zero_grounding" replaces the grounding queries' MQ-Former output by zeros before the language
        projection, so the LLM sees `language_projection(0)` (the projection's bias) at the Ng grounding
        positions and the unchanged visual-query tokens at the Nv visual positions. The `<image>`
        placeholder keeps its Nv + Ng positions and every prompt its length and token positions: only
        the information the grounding queries carry into the LLM is removed, so a score drop is theirs,
        not a change of prompt layout (dropping the positions would shift every later token and change
        what the LLM was trained to read). The MQ-Former itself runs as trained: the visual queries
        still attend to the grounding queries in its self-attention, so what the grounding branch
        contributes *through the visual queries* stays in; this measures the grounding tokens' own
        channel into the LLM.

        It is a plain attribute of this model object: not written to `config.json`, not saved, off
        after every `from_pretrained`; it applies wherever soft visual tokens are made (`visual_tokens`,
        hence `embed`, `forward`, `generate` and the predictor's shared-prefix path), with or without
        instruction-aware queries. A model built without grounding queries refuses it (ValueError)."""
        return self._query_ablation

    @query_ablation.setter
    def query_ablation(self, value: str | None) -> None:
        if value not in QUERY_ABLATIONS:
            raise ValueError(f"query_ablation must be one of {QUERY_ABLATIONS}, got {value!r}")
        if value == "zero_grounding" and not self.config.mqformer_config.num_grounding_query_tokens:
            raise ValueError(
                "query_ablation='zero_grounding' needs grounding queries; this model has none "
                "(mqformer_config.num_grounding_query_tokens=0)"
            )
        self._query_ablation = value

    def visual_tokens(self, visual: "VisualInputs") -> torch.Tensor:
        """`(B, Nv + Ng, H_llm)` soft visual tokens: projected outputs of every query (with
        `query_ablation="zero_grounding"`, zeros in place of the grounding queries' outputs).

        With `visual.qformer_input_ids` (the instruction in the MQ-Former vocabulary) the queries
        also read the instruction, bidirectionally (`instruction_aware`, InstructBLIP style)."""
        image_embeds = visual.image_embeds
        if image_embeds is None:
            if visual.pixel_values is None:
                raise ValueError("give pixel_values or image_embeds")
            with torch.no_grad():
                image_embeds = self.image_encoder(visual.pixel_values.to(self.image_encoder.vision_model.dtype))
        image = self.image_layernorm(image_embeds.to(self.image_layernorm.weight.dtype))
        local_features = visual.local_features
        if self.config.mqformer_config.num_grounding_query_tokens and local_features is None:
            local_features = image.new_zeros(image.shape[0], 0, self.config.mqformer_config.local_feature_size)
        mask = None
        if visual.qformer_input_ids is not None:
            ids = visual.qformer_input_ids
            queries_mask = ids.new_ones(ids.shape[0], self.config.mqformer_config.total_query_tokens)
            text_mask = visual.qformer_attention_mask if visual.qformer_attention_mask is not None else torch.ones_like(ids)
            mask = torch.cat([queries_mask, text_mask], dim=1)
        queries = self.mqformer(
            image_embeds=image, local_features=local_features, local_attention_mask=visual.local_attention_mask,
            input_ids=visual.qformer_input_ids, attention_mask=mask,
        )  # fmt: skip
        output = queries.query_output
        if self._query_ablation == "zero_grounding":
            if queries.grounding_query_output is None:
                raise ValueError("query_ablation='zero_grounding': the MQ-Former gave no grounding query output")
            # Zeroed before the projection, not after: the LLM then gets the projection's own
            # information-free token (its bias), a point in the range of the map whose outputs the
            # LLM (and LoRA) learnt to read, whereas a zero vector after it is an input neither the
            # projection nor the word embeddings ever produce (a second, off-distribution change
            # on top of the removed information). The visual queries' outputs pass untouched.
            parts = [queries.visual_query_output, torch.zeros_like(queries.grounding_query_output)]
            output = torch.cat([t for t in parts if t is not None], dim=1)
        return self.language_projection(output)

    def embed(self, input_ids: torch.Tensor, visual: "VisualInputs") -> torch.Tensor:
        """LLM input embeddings with the soft visual tokens written over the image placeholders.

        Visual inputs are given per image placeholder, in order of appearance (batch order, then
        position in the prompt): one per sample for ordinary prompts, K+1 for a K-shot prompt."""
        image_token = self.config.image_token_index
        embeds = self.llm.get_input_embeddings()(input_ids)
        positions = input_ids == image_token if image_token is not None else torch.zeros_like(input_ids, dtype=torch.bool)
        if not positions.any():
            return embeds
        tokens = self.visual_tokens(visual)
        expected = tokens.shape[0] * tokens.shape[1]
        if int(positions.sum()) != expected:
            raise ValueError(
                f"the prompts hold {int(positions.sum())} image-token positions, the {tokens.shape[0]} images give "
                f"{expected} visual tokens ({tokens.shape[1]} each): give one image per <image> placeholder"
            )
        return embeds.masked_scatter(positions[..., None], tokens.to(embeds.dtype))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        loss_reduction: str = "token",
        response_logits_only: bool = False,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""Args:
            input_ids (`(B, T)`): prompts with expanded `<image>` placeholders (see `LyricsProcessor`).
            labels (`(B, T)`): response ids, -100 elsewhere. The loss covers responses only.
            response_logits_only: compute the output layer only where a response token is predicted;
                `output.logits` is then `(N, V)`, one row per response token in batch order (the row at
                position t predicts `labels[:, t + 1]`) instead of the usual `(B, T, V)`. The output
                layer at every position is the largest activation of a step (`T x 32k` floats per
                sample for Vicuna) and, at toy widths, a third of its time: training asks for this.
            loss_reduction: "token", the mean over every response token of the batch (LLaVA, BLIP-2),
                or "sample", the mean per sample, then over samples (a one-word answer weighs as much
                as a caption).
            kwargs: the images' inputs, `VisualInputs` fields by name (`pixel_values`, `local_features`,
                ...) or one `visual=VisualInputs(...)`; anything else goes to the LLM.
        """
        visual, kwargs = VisualInputs.take(kwargs)
        embeds = self.embed(input_ids, visual)
        if labels is None:
            return self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs)
        targets = labels[:, 1:]
        predicts = targets != IGNORE_INDEX  # position t predicts token t + 1
        if response_logits_only and self._slices_logits():
            keep = torch.cat([predicts, predicts.new_zeros(len(predicts), 1)], dim=1)
            output = self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, logits_to_keep=keep, **kwargs)
            rows = output.logits
        else:  # every logit; a causal LM whose forward cannot slice keeps only the response rows
            output = self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs)
            rows = output.logits[:, :-1][predicts]
            if response_logits_only:
                output.logits = rows
        output.loss = response_loss(rows, targets[predicts], predicts, loss_reduction)
        return output

    def _slices_logits(self) -> bool:
        return _slices_logits(type(self.llm))

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **generate_kwargs) -> torch.Tensor:
        """transformers generation (greedy, sampling, beam search, streamers; KV cache) over the merged
        embeddings. The images' inputs come as in `forward` (`VisualInputs` fields or `visual=`); the
        rest are transformers' generation options. Returns only the new tokens, `(B, T_new)`."""
        visual, generate_kwargs = VisualInputs.take(generate_kwargs)
        embeds = self.embed(input_ids, visual)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        pad = self.llm.config.pad_token_id
        generate_kwargs.setdefault("pad_token_id", pad if pad is not None else self.llm.config.eos_token_id)
        return self.language_model.generate(inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs)

    # --- persistence --------------------------------------------------------------------------
    def _trained_state(self, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        state = self.state_dict() if state_dict is None else state_dict
        return {k: v.detach().contiguous() for k, v in state.items() if k.startswith(TRAINED_PREFIXES)}

    def save_pretrained(
        self,
        save_directory: str | Path,
        processor=None,
        state_dict: dict[str, torch.Tensor] | None = None,
        is_main_process: bool = True,
        safe_serialization: bool = True,
        **kwargs,
    ) -> None:
        """Write config, trained weights, the LoRA adapter and the processor, atomically: the directory
        appears complete or not at all.

        `state_dict`: the whole model's weights when this module's own are sharded (FSDP, ZeRO-3:
        `accelerator.get_state_dict`, gathered on the main process). `is_main_process=False` writes
        nothing (transformers' convention for multi-process saves). Weights are always safetensors;
        other transformers options (sharding, hub upload, variants) are refused by name: the
        checkpoint holds only the trained parts, and `save_merged` writes the whole model."""
        from safetensors.torch import save_file

        _refuse("save_pretrained", kwargs, "the trained weights are one safetensors file; use save_merged for a whole model")
        if not safe_serialization:
            raise ValueError("save_pretrained writes safetensors only (safe_serialization=False is not supported)")
        if not is_main_process:
            return

        with atomic_directory(save_directory) as tmp:
            self.config.save_pretrained(str(tmp))
            save_file(self._trained_state(state_dict), str(tmp / TRAINED_WEIGHTS))
            if hasattr(self.language_model, "peft_config"):
                # The embedding rows added for `<image>` are rebuilt at load (`grow_vocabulary`).
                llm_state = None
                if state_dict is not None:
                    llm_state = {k[len("language_model.") :]: v for k, v in state_dict.items() if k.startswith("language_model.")}
                self.language_model.save_pretrained(str(tmp / "adapter"), save_embedding_layers=False, state_dict=llm_state)
            if processor is not None:
                processor.save_pretrained(tmp)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        text_model: str | None = None,
        vision_model: str | None = None,
        torch_dtype: torch.dtype | None = None,
        is_trainable: bool = False,
        dtype: torch.dtype | None = None,
        device_map: str | torch.device | None = None,
        quantize: str = "none",
        **kwargs,
    ) -> "LyricsForConditionalGeneration":
        """Load a checkpoint written by `save_pretrained` or `save_merged`. `text_model` / `vision_model`
        override where the frozen parts come from (e.g. after moving them). `dtype` (or the older
        `torch_dtype`) is the frozen LLM's dtype; `device_map` may name one device ("cuda:0", "cpu")
        the whole model moves to; a per-module map is refused, as are other transformers options.
        `quantize` ("int8", "nf4"; `lyrics.inference.quantize`) merges LoRA and quantises the LLM
        on its way to `device_map`, for inference (not with `is_trainable`)."""
        from peft import PeftModel
        from safetensors.torch import load_file

        _refuse("from_pretrained", kwargs, "pass text_model / vision_model to load the frozen parts from elsewhere")
        if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
            raise ValueError(f"give dtype or torch_dtype, not both ({dtype} vs {torch_dtype})")
        torch_dtype = dtype if dtype is not None else torch_dtype
        if device_map is not None and not isinstance(device_map, (str, torch.device)) or device_map == "auto":
            raise ValueError(f"device_map must name one device (e.g. 'cuda:0'); a per-module map is not supported, got {device_map!r}")

        if quantize != "none":
            from lyrics.inference.quantize import check_quantization

            if is_trainable:
                raise ValueError(f"quantize={quantize!r} is for inference; it cannot be combined with is_trainable=True")
            check_quantization(quantize, device_map or "cpu")  # before minutes of loading
        path = Path(path)
        if not (path / "config.json").is_file() or not (path / TRAINED_WEIGHTS).is_file():
            raise FileNotFoundError(f"{path}: not a Lyrics checkpoint (needs config.json and {TRAINED_WEIGHTS})")
        config = LyricsConfig.from_pretrained(str(path))
        llm_path = text_model or _resolve(path, config.text_model_name_or_path)
        if llm_path is None:
            raise ValueError(f"{path}/config.json names no text_model_name_or_path; pass text_model=")
        llm = load_pretrained(AutoModelForCausalLM, llm_path, dtype=torch_dtype)
        grow_vocabulary(llm, config.text_config.vocab_size)
        vision_path = vision_model or _resolve(path, config.vision_model_name_or_path)
        vision = ImageEncoder.from_pretrained(vision_path, config.vision_feature_layer).vision_model if vision_path else None
        model = cls(config, language_model=llm, vision_model=vision)
        if (path / "adapter").is_dir():
            with quiet_peft():
                model.language_model = PeftModel.from_pretrained(model.language_model, str(path / "adapter"), is_trainable=is_trainable)
        state = load_file(str(path / TRAINED_WEIGHTS))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if k.startswith(TRAINED_PREFIXES)]
        if missing or unexpected:
            raise ValueError(f"{path}/{TRAINED_WEIGHTS} does not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})")
        model.configure_trainable()
        if not is_trainable:
            model.eval()
        if quantize != "none":
            from lyrics.inference.quantize import quantize_model

            quantize_model(model, quantize, device=device_map)
        if device_map is not None:
            model.to(device_map)
        return model

    def save_merged(self, save_directory: str | Path, processor=None) -> None:
        """Write a standalone checkpoint with LoRA folded into the LLM (LLM and image encoder included).

        The fold happens on a copy of the LLM, so this model keeps its adapter (and can go on
        training); the copy costs the LLM's memory once more while it is written."""
        from safetensors.torch import save_file

        llm = self.language_model
        if hasattr(llm, "merge_and_unload"):
            llm = copy.deepcopy(llm).merge_and_unload()
        with atomic_directory(save_directory) as tmp:
            llm.save_pretrained(str(tmp / "language_model"))
            self.image_encoder.vision_model.save_pretrained(str(tmp / "vision_model"))
            config = copy.deepcopy(self.config)
            config.text_model_name_or_path = "language_model"
            config.vision_model_name_or_path = "vision_model"
            config.save_pretrained(str(tmp))
            save_file(self._trained_state(), str(tmp / TRAINED_WEIGHTS))
            if processor is not None:
                processor.save_pretrained(tmp)


def _refuse(method: str, kwargs: dict, hint: str) -> None:
    """transformers' keyword arguments this model does not honour are errors, never silently dropped."""
    if kwargs:
        raise TypeError(f"LyricsForConditionalGeneration.{method} does not support {sorted(kwargs)} ({hint})")


@functools.cache
def _slices_logits(llm_class: type) -> bool:
    """Whether `llm_class.forward` takes a boolean `(B, T)` `logits_to_keep` (transformers models that
    slice through `modeling_utils.slice_logits_to_keep`). Asked once per class, not at every step."""
    import transformers.modeling_utils

    return hasattr(transformers.modeling_utils, "slice_logits_to_keep") and (
        "logits_to_keep" in inspect.signature(llm_class.forward).parameters
    )


def response_loss(logits: torch.Tensor, targets: torch.Tensor, predicts: torch.Tensor, reduction: str = "token") -> torch.Tensor:
    """Next-token cross-entropy over response tokens.

    `logits` `(N, V)` and `targets` `(N,)` are the response rows in batch order; `predicts` `(B, T-1)`
    marks where they sit. "token" averages over all N (a batch of captions and one-word answers is
    then ruled by the captions); "sample" averages within each sample, then over the samples that
    have any, so every instruction weighs alike. A batch without responses (all truncated) gives a
    zero loss that still reaches every parameter the logits depend on, instead of NaN."""
    if reduction not in ("token", "sample"):
        raise ValueError(f"loss_reduction must be 'token' or 'sample', got {reduction!r}")
    if targets.numel() == 0:
        return logits.sum() * 0.0
    per_token = nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    if reduction == "token":
        return per_token.mean()
    rows = predicts.nonzero()[:, 0]
    sums = per_token.new_zeros(len(predicts)).index_add(0, rows, per_token)
    counts = predicts.sum(dim=1)
    has = counts > 0
    return (sums[has] / counts[has]).mean()
