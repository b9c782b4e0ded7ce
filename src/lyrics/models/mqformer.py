"""The Multi-scale Querying Transformer (MQ-Former), paper section 3.1 and Figure 2 (left).

BLIP-2's Q-Former (a BERT-base encoder whose learnable queries cross-attend to frozen image features)
plus a second set of learnable *grounding* queries that cross-attend to the visual refiner's local
object features through their own cross-attention. Per layer:

    self-attention over [visual queries | grounding queries | text]     (one, shared; any mask)
    visual queries    -> cross-attention to image features             (every 2nd layer)
    grounding queries -> grounding cross-attention to local features   (every 2nd layer, padding mask)
    queries -> query FFN (shared by both query sets);  text -> text FFN

With `num_grounding_query_tokens=0` there is no grounding query, no grounding cross-attention and
no local feature input: the module computes exactly BLIP-2's Q-Former (tested against
`transformers.Blip2QFormerModel`).

Parameter names follow transformers' `Blip2QFormerModel` / `InstructBlipQFormerModel`
(`encoder.layer.N.attention.attention.query`, `embeddings.layernorm`, ...) so BLIP-2 checkpoints map
one to one; `lyrics.models.blip2_weights` holds the mappings.

Length: one readable file for the model, as transformers keeps one file per model (its config is
in `lyrics.configuration`): attention, layers, embeddings, LM head and the model itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from lyrics.configuration import MQFormerConfig

KeyValue = tuple[torch.Tensor, torch.Tensor]


def as_attention_mask(mask: torch.Tensor | None, num_queries: int, num_keys: int) -> torch.Tensor | None:
    """Turn a user mask into a boolean SDPA mask of shape (B, 1, Lq, Lk), True = may attend.

    Accepts `None`, a (B, Lk) key padding mask or a full (B, Lq, Lk) mask, with 1/0 or True/False
    values. Rows with no visible key (a padded row in a hand-built 3-D mask, an image without
    objects) are opened to every key: SDPA would return NaN for them, and their outputs are
    ignored by every objective anyway.
    """
    if mask is None:
        return None
    mask = mask.bool()
    if mask.dim() == 2:
        if mask.shape[1] != num_keys:
            raise ValueError(f"attention mask covers {mask.shape[1]} keys, the sequence has {num_keys}")
        if mask.all():
            return None  # lets SDPA take its unmasked fast path
        mask = mask[:, None, None, :]  # broadcast over heads and queries
    elif mask.dim() == 3:
        if mask.shape[1:] != (num_queries, num_keys):
            raise ValueError(
                f"attention mask has shape {tuple(mask.shape)}, expected (batch, {num_queries}, {num_keys})"
            )
        mask = mask[:, None]
    else:
        raise ValueError(f"attention mask must be (B, L) or (B, L, L), got shape {tuple(mask.shape)}")
    empty = ~mask.any(dim=-1, keepdim=True)
    return mask | empty if empty.any() else mask


class MQFormerMultiHeadAttention(nn.Module):
    """Multi-head attention through `F.scaled_dot_product_attention` (BERT parameter names)."""

    def __init__(self, config: MQFormerConfig, key_value_size: int | None = None):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        kv_size = key_value_size or config.hidden_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(kv_size, config.hidden_size)
        self.value = nn.Linear(kv_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        layer_cache: KeyValue | None = None,
    ) -> tuple[torch.Tensor, KeyValue]:
        source = hidden_states if key_value_states is None else key_value_states
        query = self._heads(self.query(hidden_states))
        key = self._heads(self.key(source))
        value = self._heads(self.value(source))
        if layer_cache is not None:
            key = torch.cat([layer_cache[0], key], dim=2)
            value = torch.cat([layer_cache[1], value], dim=2)
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=self.dropout if self.training else 0.0
        )
        out = out.transpose(1, 2).reshape(hidden_states.shape[0], hidden_states.shape[1], -1)
        return out, (key, value)


class MQFormerSelfOutput(nn.Module):
    def __init__(self, config: MQFormerConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class MQFormerAttention(nn.Module):
    """Attention + output projection + residual LayerNorm (one BERT attention block)."""

    def __init__(self, config: MQFormerConfig, key_value_size: int | None = None):
        super().__init__()
        self.attention = MQFormerMultiHeadAttention(config, key_value_size)
        self.output = MQFormerSelfOutput(config)

    def forward(self, hidden_states, key_value_states=None, attention_mask=None, layer_cache=None):
        context, present = self.attention(hidden_states, key_value_states, attention_mask, layer_cache)
        return self.output(context, hidden_states), present


class MQFormerIntermediate(nn.Module):
    """First half of a BERT FFN: dense + activation."""

    def __init__(self, config: MQFormerConfig, activation: str):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[activation]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(hidden_states))


class MQFormerFFNOutput(nn.Module):
    """Second half of a BERT FFN: dense + dropout + residual LayerNorm."""

    def __init__(self, config: MQFormerConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class MQFormerLayer(nn.Module):
    def __init__(self, config: MQFormerConfig, layer_idx: int):
        super().__init__()
        self.attention = MQFormerAttention(config)
        self.has_cross_attention = config.num_query_tokens > 0 and layer_idx % config.cross_attention_frequency == 0
        self.has_grounding_cross_attention = (
            config.num_grounding_query_tokens > 0 and layer_idx % config.grounding_frequency == 0
        )
        if self.has_cross_attention:
            self.crossattention = MQFormerAttention(config, config.encoder_hidden_size)
        if self.has_grounding_cross_attention:
            self.grounding_crossattention = MQFormerAttention(config, config.local_feature_size)
        if self.has_grounding_cross_attention:
            for linear in self.grounding_crossattention.modules():
                if isinstance(linear, nn.Linear):
                    linear._lyrics_xavier_init = True  # read by MQFormerPreTrainedModel._init_weights
        # BERT's parameter names: `intermediate`/`output` is the text FFN, `*_query` the query FFN
        # that both query sets share.
        self.intermediate = MQFormerIntermediate(config, config.hidden_act)
        self.output = MQFormerFFNOutput(config)
        self.intermediate_query = MQFormerIntermediate(config, config.query_hidden_act or config.hidden_act)
        self.output_query = MQFormerFFNOutput(config)

    def text_ffn(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(hidden_states), hidden_states)

    def query_ffn(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.output_query(self.intermediate_query(hidden_states), hidden_states)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        image_embeds: torch.Tensor | None,
        image_mask: torch.Tensor | None,
        local_features: torch.Tensor | None,
        local_mask: torch.Tensor | None,
        num_visual: int,
        num_grounding: int,
        layer_cache: KeyValue | None = None,
    ) -> tuple[torch.Tensor, KeyValue]:
        attention_output, present = self.attention(hidden_states, None, attention_mask, layer_cache)
        num_queries = num_visual + num_grounding
        if num_queries == 0:
            return self.text_ffn(attention_output), present

        visual = attention_output[:, :num_visual]
        grounding = attention_output[:, num_visual:num_queries]
        if self.has_cross_attention and num_visual:
            if image_embeds is None:
                raise ValueError("image_embeds must be given when visual queries are in the sequence")
            visual, _ = self.crossattention(visual, image_embeds, image_mask)
        if self.has_grounding_cross_attention and num_grounding:
            if local_features is None:
                raise ValueError("local_features must be given when grounding queries are in the sequence")
            grounding, _ = self.grounding_crossattention(grounding, local_features, local_mask)
        queries = self.query_ffn(torch.cat([visual, grounding], dim=1) if num_grounding else visual)
        if attention_output.shape[1] == num_queries:
            return queries, present
        text = self.text_ffn(attention_output[:, num_queries:])
        return torch.cat([queries, text], dim=1), present


class MQFormerEmbeddings(nn.Module):
    """Word + position embeddings for text; queries are prepended, then one LayerNorm over all,
    as in BLIP-2 (LAVIS `Qformer.bert.embeddings`, transformers `qformer.layernorm`)."""

    def __init__(self, config: MQFormerConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        query_embeds: torch.Tensor | None,
    ) -> torch.Tensor:
        parts = [] if query_embeds is None else [query_embeds]
        if input_ids is not None:
            if position_ids is None:
                position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
            if int(position_ids.max()) >= self.position_embeddings.num_embeddings:
                raise ValueError(
                    f"text of {input_ids.shape[1]} tokens exceeds max_position_embeddings="
                    f"{self.position_embeddings.num_embeddings}"
                )
            parts.append(self.word_embeddings(input_ids) + self.position_embeddings(position_ids))
        return self.dropout(self.layernorm(torch.cat(parts, dim=1)))


class MQFormerLMHead(nn.Module):
    """BERT's prediction head; the decoder matrix is the word embedding matrix (tied by construction)."""

    def __init__(self, config: MQFormerConfig):
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.act = ACT2FN[config.hidden_act]
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        hidden_states = self.transform.LayerNorm(self.act(self.transform.dense(hidden_states)))
        return F.linear(hidden_states, word_embeddings, self.bias)


@dataclass
class MQFormerOutput(ModelOutput):
    """Outputs of `MQFormerModel.forward`.

    Args:
        last_hidden_state (`(B, L, H)`): every position of this pass (queries first, then text).
        visual_query_output (`(B, Nv, H)`), grounding_query_output (`(B, Ng, H)`): the query outputs,
            `None` when the pass had no queries.
        text_output (`(B, T, H)`): the text positions, `None` without text.
        cache: per layer, the self-attention keys/values of this pass (with `use_cache`),
            so a later text-only pass can attend to these queries (BLIP-2's ITG).
        hidden_states: input of every layer plus the final output (with `output_hidden_states`).
    """

    last_hidden_state: torch.Tensor | None = None
    visual_query_output: torch.Tensor | None = None
    grounding_query_output: torch.Tensor | None = None
    text_output: torch.Tensor | None = None
    cache: tuple[KeyValue, ...] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None

    @property
    def query_output(self) -> torch.Tensor | None:
        """All query outputs, visual then grounding: the soft visual tokens of stage 2."""
        parts = [t for t in (self.visual_query_output, self.grounding_query_output) if t is not None]
        return torch.cat(parts, dim=1) if parts else None


class MQFormerPreTrainedModel(PreTrainedModel):
    config: MQFormerConfig
    config_class = MQFormerConfig
    base_model_prefix = "mqformer"
    main_input_name = "image_embeds"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MQFormerLayer"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear) and getattr(module, "_lyrics_xavier_init", False):
            # Paper section 3.1: the extra cross-attention of the grounding queries is Xavier-initialised.
            init.xavier_uniform_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, MQFormerLMHead):
            init.zeros_(module.bias)
        elif isinstance(module, MQFormerModel):
            init.normal_(module.query_tokens, mean=0.0, std=std)
            if module.grounding_query_tokens is not None:
                init.normal_(module.grounding_query_tokens, mean=0.0, std=std)


class MQFormerModel(MQFormerPreTrainedModel):
    r"""The MQ-Former: learnable visual and grounding queries, a BERT text transformer sharing their
    self-attention, and a tied LM head for the generative objectives.

    Example:

    ```python
    >>> from lyrics.configuration import MQFormerConfig
    >>> model = MQFormerModel(MQFormerConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...     intermediate_size=64, encoder_hidden_size=16, local_feature_size=8, num_query_tokens=4,
    ...     num_grounding_query_tokens=4))
    >>> out = model(image_embeds=torch.randn(2, 5, 16), local_features=torch.randn(2, 3, 8))
    >>> out.query_output.shape
    torch.Size([2, 8, 32])
    ```
    """

    def __init__(self, config: MQFormerConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, hidden))
        if config.num_grounding_query_tokens:
            self.grounding_query_tokens = nn.Parameter(torch.zeros(1, config.num_grounding_query_tokens, hidden))
            self.local_layernorm = (
                nn.LayerNorm(config.local_feature_size) if config.local_feature_layernorm else nn.Identity()
            )
        else:
            self.grounding_query_tokens = None
            self.local_layernorm = None
        self.embeddings = MQFormerEmbeddings(config)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(MQFormerLayer(config, i) for i in range(config.num_hidden_layers))
        self.lm_head = MQFormerLMHead(config)
        self.gradient_checkpointing = False
        self.post_init()

    @property
    def num_query_tokens(self) -> int:
        return self.config.num_query_tokens

    @property
    def num_grounding_query_tokens(self) -> int:
        return self.config.num_grounding_query_tokens

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def unused_without_text_outputs(self, reads_text: bool) -> tuple[str, ...]:
        """Parameter-name prefixes whose outputs nothing reads when only the query outputs are used
        (stage 2): the LM head, the last layer's text FFN (its text output is discarded) and, when the
        queries read no text (`reads_text=False`), every text-only part: word and position embeddings
        and each layer's text FFN. Stage 2 freezes them, so data-parallel engines never wait for
        their gradients."""
        last = len(self.encoder.layer) - 1
        layers = range(len(self.encoder.layer)) if not reads_text else [last]
        prefixes = ["lm_head."]
        if not reads_text:
            prefixes += ["embeddings.word_embeddings.", "embeddings.position_embeddings."]
        for i in layers:
            prefixes += [f"encoder.layer.{i}.intermediate.", f"encoder.layer.{i}.output."]
        return tuple(prefixes)

    def lm_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of text positions through the tied LM head, `(B, T, vocab_size)`."""
        return self.lm_head(hidden_states, self.embeddings.word_embeddings.weight)

    def forward(
        self,
        image_embeds: torch.Tensor | None = None,
        local_features: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        image_attention_mask: torch.Tensor | None = None,
        local_attention_mask: torch.Tensor | None = None,
        cache: tuple[KeyValue, ...] | None = None,
        include_queries: bool = True,
        use_cache: bool = False,
        output_hidden_states: bool = False,
    ) -> MQFormerOutput:
        r"""Run one pass over `[visual queries | grounding queries | text]`.

        Args:
            image_embeds (`(B, Ni, encoder_hidden_size)`): frozen global image features (after
                `ln_vision`), attended by the visual queries.
            local_features (`(B, K, local_feature_size)`): the refiner's per-object features, attended
                by the grounding queries. K may be 0.
            local_attention_mask (`(B, K)`): 1 for real objects, 0 for padding.
            image_attention_mask (`(B, Ni)`): optional padding mask of the image features.
            input_ids (`(B, T)`): text token ids (spatial representation and/or caption).
            position_ids (`(B, T)`): text positions; default `0..T-1` whatever precedes the text.
            attention_mask (`(B, Lk)` or `(B, Lq, Lk)`): self-attention mask, 1 = may attend. Lq is this
                pass's length (queries + text); Lk adds the cached positions of `cache`.
                A 2-D mask is a key padding mask (bidirectional); a 3-D mask is used as given.
            cache: the `cache` of an earlier query-only pass (`use_cache=True`); the
                text of this pass attends to those queries. No queries are run in such a pass.
            include_queries (`bool`): False runs text alone (the text side of ITC).
            use_cache (`bool`): return this pass's self-attention keys/values.
        """
        if cache is not None:
            include_queries = False
        num_visual = self.config.num_query_tokens if include_queries else 0
        num_grounding = self.config.num_grounding_query_tokens if include_queries else 0
        batch = _batch_size(image_embeds, local_features, input_ids)
        dtype = self.query_tokens.dtype

        query_embeds = None
        if num_visual + num_grounding:
            parts = [self.query_tokens.expand(batch, -1, -1)]
            if num_grounding:
                parts.append(self.grounding_query_tokens.expand(batch, -1, -1))
            query_embeds = torch.cat(parts, dim=1)
        if query_embeds is None and input_ids is None:
            raise ValueError("nothing to run: give input_ids, or include the queries")
        hidden_states = self.embeddings(input_ids, position_ids, query_embeds)

        image_mask = local_mask = None
        if num_visual and image_embeds is not None:
            image_embeds = image_embeds.to(dtype)
            image_mask = as_attention_mask(image_attention_mask, hidden_states.shape[1], image_embeds.shape[1])
        if num_grounding:
            if local_features is None:
                raise ValueError("local_features must be given: this MQ-Former has grounding queries")
            local_features, local_attention_mask = _pad_empty_objects(local_features.to(dtype), local_attention_mask)
            local_features = self.local_layernorm(local_features)
            local_mask = as_attention_mask(local_attention_mask, num_grounding, local_features.shape[1])

        past_length = cache[0][0].shape[2] if cache is not None else 0
        self_mask = as_attention_mask(attention_mask, hidden_states.shape[1], past_length + hidden_states.shape[1])

        all_hidden = [hidden_states] if output_hidden_states else None
        presents = [] if use_cache else None
        for i, layer in enumerate(self.encoder.layer):
            args = (
                hidden_states,
                self_mask,
                image_embeds,
                image_mask,
                local_features,
                local_mask,
                num_visual,
                num_grounding,
                cache[i] if cache is not None else None,
            )
            if self.gradient_checkpointing and self.training:
                hidden_states, present = self._gradient_checkpointing_func(layer.__call__, *args)
            else:
                hidden_states, present = layer(*args)
            if use_cache:
                presents.append(present)
            if output_hidden_states:
                all_hidden.append(hidden_states)

        num_queries = num_visual + num_grounding
        return MQFormerOutput(
            last_hidden_state=hidden_states,
            visual_query_output=hidden_states[:, :num_visual] if num_visual else None,
            grounding_query_output=hidden_states[:, num_visual:num_queries] if num_grounding else None,
            text_output=hidden_states[:, num_queries:] if input_ids is not None else None,
            cache=tuple(presents) if use_cache else None,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
        )


def _batch_size(*tensors: torch.Tensor | None) -> int:
    for tensor in tensors:
        if tensor is not None:
            return tensor.shape[0]
    raise ValueError("give at least one of image_embeds, local_features or input_ids")


def _pad_empty_objects(
    features: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A batch where no image has an object (K = 0) gets one all-zero padding slot, so attention
    has a key to look at; `as_attention_mask` then opens it for the empty rows."""
    if features.shape[1] > 0:
        return features, mask
    batch, _, width = features.shape
    features = features.new_zeros(batch, 1, width)
    return features, torch.zeros(batch, 1, dtype=torch.bool, device=features.device)
