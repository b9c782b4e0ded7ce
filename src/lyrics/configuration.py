"""Typed configurations for every part of Lyrics (paper section 3.1 and section 4).

Three `transformers.PreTrainedConfig` subclasses, saved as JSON beside the weights:

* `MQFormerConfig`  - the Multi-scale Querying Transformer (BERT-base Q-Former + grounding queries).
* `RefinerConfig`   - the frozen visual refiner: tagger -> detector -> segmenter, and the local
                      feature layout it hands to the grounding queries.
* `LyricsConfig`    - the whole model: image encoder (CLIP vision config), refiner, MQ-Former,
                      LLM (any causal-LM config) and the LoRA / stage-2 switches.

Every difference between the paper and the authors' released code (docs/design.md, "Released code vs. paper") is a field
here, so the `paper` and `released` presets in `lyrics.presets` differ only in values.
"""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
try:
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # transformers before 5.20 (vLLM's pin): sub-configs are built in LyricsConfig.__post_init__
    SubConfigSpec = None

# Special tokens the MQ-Former objectives need, appended to BERT's 30522-token vocabulary in this
# fixed order. `[DEC]` comes first so that its id (30522) matches LAVIS' BLIP-2 checkpoints, whose
# tokenizer adds exactly one token (`[DEC]` as bos) and resizes the embeddings to 30523.
MQFORMER_SPECIAL_TOKENS = ("[DEC]", "[BOS]", "[MLM]")
# Markup of the textual spatial representation `<br><T>tag</T><Bbox>(x1,y1),(x2,y2)</Box></br>`.
# They are added as whole tokens so that BERT's lower-casing WordPiece never splits them and MSP can
# mask an object's tag and box as units.
SPATIAL_MARKUP_TOKENS = ("<br>", "</br>", "<T>", "</T>", "<Bbox>", "</Box>")
BERT_BASE_VOCAB_SIZE = 30522


class MQFormerConfig(PreTrainedConfig):
    r"""Configuration of the MQ-Former (paper section 3.1, Figure 2 left).

    The text-side fields are BERT-base's, as in BLIP-2's Q-Former. On top of them:

    Args:
        encoder_hidden_size (`int`, defaults to 1024): width of the global image features the visual
            queries cross-attend to (CLIP ViT-L/14: 1024; EVA ViT-g in the released code: 1408).
        local_feature_size (`int`, defaults to 516): width of one object's local refiner feature the
            grounding queries cross-attend to (detection state 256 + box 4 + segmentation 256).
        num_query_tokens (`int`, defaults to 32): visual queries.
        num_grounding_query_tokens (`int`, defaults to 32): grounding queries. `0` turns the MQ-Former
            into BLIP-2's Q-Former exactly (the "w/o grounding queries" ablation).
        cross_attention_frequency (`int`, defaults to 2): layer `i` has cross-attention when
            `i % cross_attention_frequency == 0` (BLIP-2 and the released code).
        grounding_cross_attention_frequency (`int`, *optional*): same for the grounding cross-attention;
            defaults to `cross_attention_frequency` (the released code puts both in the same layers).
        query_hidden_act (`str`, *optional*): activation of the query FFN shared by both query sets.
            The paper says ReLU, BLIP-2 and the released code use GELU; `None` means `hidden_act`
            (GELU), which is what makes BLIP-2 initialisation meaningful (docs/design.md, "Ambiguities in the paper and the reading we take").
        local_feature_layernorm (`bool`, defaults to True): LayerNorm over local features before the
            grounding cross-attention. The local vector mixes decoder states, box coordinates in
            [0, 1] and SAM embeddings of different scales; BLIP-2 normalises image features the same
            way (`ln_vision`). The released code has none.
        grounding_query_init (`str`, defaults to "normal"): how grounding queries start when loading
            BLIP-2 weights: "normal" (N(0, 0.02), as BLIP-2 initialised its own queries) or "copy"
            (tile the pretrained visual queries, so both sets start from BLIP-2's learned state).
        contrastive_dim (`int`, defaults to 256): ITC projection width (BLIP-2 `embed_dim`).
        *_token_id: ids of BERT's and the added special tokens in the MQ-Former vocabulary.
    """

    model_type = "lyrics_mqformer"
    base_config_key = "mqformer_config"

    vocab_size: int = BERT_BASE_VOCAB_SIZE + len(MQFORMER_SPECIAL_TOKENS) + len(SPATIAL_MARKUP_TOKENS)
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    query_hidden_act: str | None = None
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    encoder_hidden_size: int = 1024
    local_feature_size: int = 516
    num_query_tokens: int = 32
    num_grounding_query_tokens: int = 32
    cross_attention_frequency: int = 2
    grounding_cross_attention_frequency: int | None = None
    local_feature_layernorm: bool = True
    grounding_query_init: str = "normal"
    contrastive_dim: int = 256
    pad_token_id: int | None = 0
    cls_token_id: int = 101
    sep_token_id: int = 102
    mask_token_id: int = 103
    dec_token_id: int = BERT_BASE_VOCAB_SIZE
    bos_token_id: int | None = BERT_BASE_VOCAB_SIZE + 1
    mlm_token_id: int = BERT_BASE_VOCAB_SIZE + 2

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"MQFormerConfig.hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.grounding_query_init not in ("normal", "copy"):
            raise ValueError(
                f"MQFormerConfig.grounding_query_init must be 'normal' or 'copy', got {self.grounding_query_init!r}"
            )
        for name in ("num_query_tokens", "num_grounding_query_tokens", "cross_attention_frequency"):
            if getattr(self, name) < 0 or (name == "cross_attention_frequency" and self.cross_attention_frequency < 1):
                raise ValueError(f"MQFormerConfig.{name} must be positive, got {getattr(self, name)}")
        special = {
            "dec_token_id": self.dec_token_id,
            "bos_token_id": self.bos_token_id,
            "mlm_token_id": self.mlm_token_id,
            "mask_token_id": self.mask_token_id,
        }
        for name, idx in special.items():
            if idx is not None and not 0 <= idx < self.vocab_size:
                raise ValueError(f"MQFormerConfig.{name}={idx} is outside the vocabulary (vocab_size={self.vocab_size})")

    @property
    def grounding_frequency(self) -> int:
        return self.grounding_cross_attention_frequency or self.cross_attention_frequency

    @property
    def total_query_tokens(self) -> int:
        return self.num_query_tokens + self.num_grounding_query_tokens


def _plugin_backends() -> tuple[str, ...]:
    """Names of refiner backends installed packages declare (entry points; nothing is imported)."""
    from importlib.metadata import entry_points

    return tuple(sorted({entry.name for entry in entry_points(group="lyrics.refiner_backends")}))


class RefinerConfig(PreTrainedConfig):
    r"""Configuration of the frozen visual refiner (paper section 3.1, Figure 2 right).

    Three pluggable stages run in order: a tagger names what is in the image, a detector finds boxes
    for those tags, a segmenter turns the boxes into masks. Their outputs form the textual spatial
    representation and the local features of the grounding queries.

    Args:
        tagger (`str`): "clip" (zero-shot CLIP over `tag_vocabulary`), "ram" (RAM++, only when the
            `ram` package is importable), "given" (tags from the annotations), or a plug-in's name ("toy").
        tagger_model (`str`): checkpoint id or path for the tagger.
        tag_vocabulary (`str`, *optional*): file with one tag per line, optionally `tag<TAB>threshold`.
        tag_threshold (`float`): default per-tag threshold.
        max_tags (`int`): keep at most this many tags per image.
        detector (`str`): "grounding_dino" or a plug-in's name ("toy").
        detector_model (`str`): checkpoint id or path for Grounding-DINO.
        box_threshold, text_threshold (`float`): Grounding-DINO thresholds (released code: 0.25, 0.2).
        nms_iou (`float`): IoU above which NMS drops the lower-scored box (released code: 0.6).
        max_objects (`int`): keep the top-K objects by score; this is K in the local features.
        segmenter (`str`): "sam_hq", "sam", "none" (the released code has no SAM) or a plug-in's name ("toy").
        segmenter_model (`str`): checkpoint id or path for SAM / SAM-HQ.
        detection_feature_size, box_feature_size, segmentation_feature_size (`int`): the local
            feature layout per object; their sum is `local_feature_size`.
        coordinate_format (`str`): "int1000" (integers in [0, 1000), Qwen-VL style, default) or
            "unit3" ([0, 1] with 3 decimals, Shikra / released-code style).
        spatial_format (`str`): "paper" (`<br><T>..</T><Bbox>..</Box></br>`) or "released"
            (`tag: [x1, y1, x2, y2]` joined by `[SEP]`).
        max_image_pixels (`int`): images with more pixels are rejected (decompression bombs).
        tag_prompt (`str`, defaults to "a photo of a {}."): CLIP tagger prompt template; `{}` is the tag.
        class_agnostic_nms (`bool`, defaults to True): NMS across tags (one box per region, as
            Grounded-SAM does); False runs NMS per tag.
        batch_size (`int`, defaults to 8): images per refiner forward pass. Runtime only: it is not part
            of the store's identity.
        shard_size (`int`, defaults to 1000): records per feature-store shard (the unit of atomicity and
            of restart).
        store_format (`str`, defaults to "safetensors"): "safetensors" (one features file per shard) or
            "webdataset" (tar shards with one `json` + `features.safetensors` entry per image); both come
            with the JSONL index.
        feature_dtype (`str`, defaults to "float16"): dtype of stored local features ("float16",
            "bfloat16" or "float32"); fp16 halves storage (docs/design.md, "Refiner components in transformers").
    """

    model_type = "lyrics_refiner"
    base_config_key = "refiner_config"

    tagger: str = "clip"
    tagger_model: str | None = "openai/clip-vit-large-patch14"
    tag_vocabulary: str | None = None
    tag_threshold: float = 0.25
    max_tags: int = 32
    detector: str = "grounding_dino"
    detector_model: str | None = "IDEA-Research/grounding-dino-tiny"
    box_threshold: float = 0.25
    text_threshold: float = 0.2
    nms_iou: float = 0.6
    max_objects: int = 100
    segmenter: str = "sam_hq"
    segmenter_model: str | None = "syscv-community/sam-hq-vit-huge"
    detection_feature_size: int = 256
    box_feature_size: int = 4
    segmentation_feature_size: int = 256
    coordinate_format: str = "int1000"
    spatial_format: str = "paper"
    max_image_pixels: int = 64_000_000
    tag_prompt: str = "a photo of a {}."
    class_agnostic_nms: bool = True
    batch_size: int = 8
    shard_size: int = 1000
    store_format: str = "safetensors"
    feature_dtype: str = "float16"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # Backends: the refiner's own, plus those plug-ins declare as entry points of the group
        # `lyrics.refiner_backends` (the toy world's "toy" among them; `lyrics.refiner.backends`).
        plugins = _plugin_backends()
        choices = {
            "tagger": ("clip", "ram", "given", *plugins),
            "detector": ("grounding_dino", *plugins),
            "segmenter": ("sam_hq", "sam", "none", *plugins),
            "coordinate_format": ("int1000", "unit3"),
            "spatial_format": ("paper", "released"),
            "store_format": ("safetensors", "webdataset"),
            "feature_dtype": ("float16", "bfloat16", "float32"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"RefinerConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.segmenter == "none" and self.segmentation_feature_size:
            raise ValueError("RefinerConfig.segmentation_feature_size must be 0 when segmenter='none'")
        for name in ("max_tags", "max_objects", "batch_size", "shard_size", "max_image_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"RefinerConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.box_feature_size not in (0, 4):
            raise ValueError(f"RefinerConfig.box_feature_size must be 4 (cx, cy, w, h) or 0, got {self.box_feature_size}")
        if "{}" not in self.tag_prompt:
            raise ValueError(f"RefinerConfig.tag_prompt must contain '{{}}' for the tag, got {self.tag_prompt!r}")

    @property
    def local_feature_size(self) -> int:
        return self.detection_feature_size + self.box_feature_size + self.segmentation_feature_size


class LyricsConfig(PreTrainedConfig):
    r"""Configuration of a whole Lyrics model: frozen image encoder and refiner, MQ-Former, linear
    projection and an LLM tuned with LoRA (paper sections 3.1 and 3.3, Figure 1).

    Args:
        vision_config (`dict` or `PreTrainedConfig`): the frozen image encoder: a `CLIPVisionConfig`
            (CLIP ViT-L/14, paper) or a `Blip2VisionConfig` (EVA ViT-g, released code).
        refiner_config (`dict` or `RefinerConfig`): the frozen visual refiner.
        trained_refiner_config (`dict`, *optional*): the `RefinerConfig` fields of the refiner that made
            the feature store this model was trained from, copied from the store by the training
            recipes (`lyrics.refiner.provenance`). Inference runs this refiner; `None` (no store, or a
            checkpoint from before the record) means `refiner_config`.
        mqformer_config (`dict` or `MQFormerConfig`): the MQ-Former. Its `encoder_hidden_size` and
            `local_feature_size` are derived from the vision and refiner configs.
        text_config (`dict` or `PreTrainedConfig`): any causal LM config (LLaMA / Vicuna first).
        vision_feature_layer (`int`, defaults to -2): which hidden state of the image encoder feeds the
            MQ-Former; BLIP-2 (LAVIS) and LLaVA drop the last ViT layer.
        lora_r, lora_alpha, lora_dropout, lora_target_modules: the LLM's LoRA (paper: W_q and W_v;
            r=96 reproduces the paper's 79M LoRA parameters on Vicuna-13B).
        lora_modules_to_save (`list[str]`, defaults to none): LLM modules trained in full beside LoRA
            (PEFT `modules_to_save`, e.g. `["lm_head"]`); the paper trains none. The toy world's stand-in
            LLM needs its output layer (its colour words start with nearly parallel embeddings).
        train_mqformer (`bool`, defaults to True): stage 2 trains the MQ-Former (paper). The released
            code freezes it and the projection.
        spatial_text_in_prompt (`bool`, defaults to False): also put the refiner's textual spatial
            representation in the LLM prompt (an ambiguity, docs/design.md, "Ambiguities in the paper and the reading we take"; measured by `lyrics ablate`).
        instruction_aware (`bool`, defaults to False): in stage 2 the MQ-Former also reads the
            instruction (InstructBLIP's instruction-aware query extraction; the released code's
            `qformer_input_ids`), so the queries extract what the question asks about.
        image_token (`str`): the placeholder in prompts where the soft visual tokens go.
        image_token_index (`int`, *optional*): its id in the LLM vocabulary (set when the processor adds it).
        text_model_name_or_path, vision_model_name_or_path (`str`, *optional*): where the frozen LLM and
            image encoder weights come from (hub id or directory; relative paths are resolved against
            the checkpoint directory). A stage-2 checkpoint stores only the trained weights and points
            here for the rest; `lyrics merge` writes a standalone copy.
        use_itc, use_itm, use_icg, use_msp (`bool`): the stage-1 objectives (section 3.2); their losses
            are summed (equation 5). Each can be switched off for ablations.
        use_spatial_text (`bool`, defaults to True): feed the spatial representation to the MQ-Former's
            text side in stage 1; False is Table 4's "w/o spatial representation" (no MSP then).
        label_smoothing (`float`, defaults to 0.1): on every stage-1 loss (BLIP-2 ITC, released code).
        itc_halves (`str`, defaults to "mean"): how ITC's two halves (caption <-> visual queries, spatial
            text <-> grounding queries) make one loss. "mean": one contrastive loss on the mean of the
            two cosines (equation 1 read literally: one similarity of H_I and H_T). "separate": each
            half its own contrastive loss, the two averaged; the spatial half alone can then not carry
            the loss (its text is computed from the image, so it aligns fast and leaves the caption
            half little gradient; docs/toy-model.md measures both).
        msp_probability (`float`, defaults to 0.15): MSP masking probability per unit.
        msp_unit (`str`): "object" masks a whole object (tag and box, the paper's whole-object masking);
            "component" masks a tag or a single coordinate (released code).
        caption_position_restart (`bool`, defaults to True): caption positions restart at 0 after the
            spatial text, so the caption sees the same positions as in BLIP-2 (released code does this).
    """

    model_type = "lyrics"
    if SubConfigSpec is not None:
        sub_configs_defaults = {
            "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model"),
            "refiner_config": RefinerConfig,
            "mqformer_config": MQFormerConfig,
            "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        }
    else:
        sub_configs = {"vision_config": AutoConfig, "refiner_config": RefinerConfig, "mqformer_config": MQFormerConfig, "text_config": AutoConfig}

    vision_config: dict | PreTrainedConfig | None = None
    refiner_config: dict | PreTrainedConfig | None = None
    trained_refiner_config: dict | None = None
    mqformer_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    vision_feature_layer: int = -2
    lora_r: int = 96
    lora_alpha: int = 192
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | tuple[str, ...] = ("q_proj", "v_proj")
    lora_modules_to_save: list[str] | tuple[str, ...] = ()
    train_mqformer: bool = True
    spatial_text_in_prompt: bool = False
    instruction_aware: bool = False
    image_token: str = "<image>"
    image_token_index: int | None = None
    text_model_name_or_path: str | None = None
    vision_model_name_or_path: str | None = None
    use_itc: bool = True
    use_itm: bool = True
    use_icg: bool = True
    use_msp: bool = True
    use_spatial_text: bool = True
    label_smoothing: float = 0.1
    itc_halves: str = "mean"
    msp_probability: float = 0.15
    msp_unit: str = "object"
    caption_position_restart: bool = True
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if SubConfigSpec is None:
            from transformers import CONFIG_MAPPING

            for key, default_type in (("vision_config", "clip_vision_model"), ("text_config", "llama")):
                value = getattr(self, key)
                if not isinstance(value, PreTrainedConfig):
                    value = dict(value or {})
                    setattr(self, key, CONFIG_MAPPING[value.pop("model_type", default_type)](**value))
            for key, cls in (("refiner_config", RefinerConfig), ("mqformer_config", MQFormerConfig)):
                value = getattr(self, key)
                if not isinstance(value, PreTrainedConfig):
                    setattr(self, key, cls(**(value or {})))
        super().__post_init__(**kwargs)
        self.lora_target_modules = list(self.lora_target_modules)
        self.lora_modules_to_save = list(self.lora_modules_to_save)
        if self.itc_halves not in ("mean", "separate"):
            raise ValueError(f"LyricsConfig.itc_halves must be 'mean' or 'separate', got {self.itc_halves!r}")
        if self.msp_unit not in ("object", "component"):
            raise ValueError(f"LyricsConfig.msp_unit must be 'object' or 'component', got {self.msp_unit!r}")
        # The MQ-Former's input widths follow from the frozen parts, as Blip2Config derives the
        # Q-Former's encoder width from its vision config.
        self.mqformer_config.encoder_hidden_size = self.vision_config.hidden_size
        if self.mqformer_config.num_grounding_query_tokens:
            self.mqformer_config.local_feature_size = self.refiner_config.local_feature_size

    @property
    def num_image_tokens(self) -> int:
        """Soft visual tokens handed to the LLM: every query output, visual and grounding."""
        return self.mqformer_config.total_query_tokens
