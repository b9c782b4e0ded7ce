"""Stage 1: bootstrapping vision-language representation alignment (paper section 3.2, Figure 3).

`LyricsForPretraining` connects the MQ-Former to the frozen image encoder and visual refiner (their
features come in as tensors) and trains it with four objectives whose losses are summed (eq. 5):

* ITC - image-text contrastive learning between H_I = [pool(H_v); pool(H_g)] and
        H_T = [[CLS] of the caption; [BOS] of the spatial representation]. Each half is projected and
        L2-normalised; the similarity is the mean of the two cosines (caption <-> visual queries,
        spatial text <-> grounding queries) over a learnable temperature. Negatives come from the
        whole batch on every rank (all-gather).
* ITM - image-text matching with the regionalised mask (`lyrics.models.masks.itm_pairs`); hard
        negatives sampled from the ITC similarities as BLIP-2 does; one 2-way classifier reads the
        visual queries (paired with the caption) and the grounding queries (paired with the spatial
        text); the two cross-entropies are averaged (eq. 2).
* ICG - image-grounded caption generation: [DEC] replaces [CLS], the caption is generated causally
        from both query sets (their keys/values cached from the ITC query pass), no spatial text.
* MSP - masked spatial predicting: [MLM] replaces [BOS], whole objects of the spatial text are
        replaced by [MASK] (done by the collator, `lyrics.training.collate`), queries and spatial text
        bidirectional, caption absent.

Ablations (Table 4) are config switches: `num_grounding_query_tokens=0` (the visual queries play both
parts), `use_spatial_text=False` (the caption plays both parts, no MSP), and per-loss toggles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from lyrics.configuration import LyricsConfig
from lyrics.models import masks
from lyrics.models.masks import Segment
from lyrics.models.mqformer import MQFormerModel
from lyrics.distributed import all_gather_no_grad, all_gather_padded, rank


@dataclass
class PretrainingOutput(ModelOutput):
    """Losses of one stage-1 step; `loss` is their sum. `itc_accuracy` is the in-batch image->text
    retrieval accuracy, logged to see alignment happen."""

    loss: torch.Tensor | None = None
    loss_itc: torch.Tensor | None = None
    loss_itm: torch.Tensor | None = None
    loss_icg: torch.Tensor | None = None
    loss_msp: torch.Tensor | None = None
    itc_accuracy: torch.Tensor | None = None
    similarity: torch.Tensor | None = None


class LyricsPreTrainedModel(PreTrainedModel):
    config: LyricsConfig
    config_class = LyricsConfig
    base_model_prefix = "lyrics"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MQFormerLayer"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, LyricsForPretraining):
            init.constant_(module.temp, 0.07)


class LyricsForPretraining(LyricsPreTrainedModel):
    r"""The MQ-Former with the stage-1 heads: `vision_proj`/`text_proj` (BLIP-2's ITC projections, for the
    visual queries and the caption), `grounding_proj`/`spatial_proj` (their counterparts for the grounding
    queries and the spatial text), `itm_head`, the learnable temperature `temp`, and `image_layernorm`
    (BLIP-2's `ln_vision`, trained with the MQ-Former)."""

    def __init__(self, config: LyricsConfig):
        super().__init__(config)
        mq = config.mqformer_config
        self.image_layernorm = nn.LayerNorm(mq.encoder_hidden_size)
        self.mqformer = MQFormerModel(mq)
        self.vision_proj = nn.Linear(mq.hidden_size, mq.contrastive_dim)
        self.text_proj = nn.Linear(mq.hidden_size, mq.contrastive_dim)
        self.grounding_proj = nn.Linear(mq.hidden_size, mq.contrastive_dim)
        self.spatial_proj = nn.Linear(mq.hidden_size, mq.contrastive_dim)
        self.itm_head = nn.Linear(mq.hidden_size, 2)
        # One element, not 0-d (BLIP-2's shape): FSDP2 shards no scalar parameter. A state dict with
        # the scalar (an older trainer checkpoint) loads through `_load_from_state_dict` below; an
        # older `save_pretrained` folder does not load with `from_pretrained` (docs/scale.md).
        self.temp = nn.Parameter(torch.full((1,), 0.07))
        self.post_init()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "temp"
        if key in state_dict and state_dict[key].dim() == 0:
            state_dict[key] = state_dict[key].reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def get_input_embeddings(self) -> None:
        """None: no embedding unit of its own for FSDP's wrapping. The MQ-Former's LM head reads the
        word-embedding matrix directly (tied by construction), outside the embedding's forward, so the
        matrix must stay in the unit of the whole model (`mqformer.get_input_embeddings()` is the
        module itself)."""
        return None

    def get_output_embeddings(self) -> None:
        return None

    def configure_trainable(self) -> list[str]:
        """Freeze the heads of objectives this config switches off (Table 4's ablations), so that
        every trainable parameter gets a gradient at every step: data-parallel engines then need no
        `find_unused_parameters`. Returns the frozen names."""
        cfg = self.config
        unused: list[str] = []
        if not cfg.use_itc:  # ITM's hard negatives read the similarities without gradient
            unused += ["vision_proj.", "text_proj.", "grounding_proj.", "spatial_proj.", "temp"]
        if not cfg.use_itm:
            unused.append("itm_head.")
        if not (cfg.use_icg or (cfg.use_msp and cfg.use_spatial_text)):
            unused.append("mqformer.lm_head.")
        frozen = []
        for name, param in self.named_parameters():
            if name.startswith(tuple(unused)):
                param.requires_grad = False
                frozen.append(name)
        return frozen

    # ----------------------------------------------------------------------------------------------
    @property
    def has_grounding(self) -> bool:
        return self.config.mqformer_config.num_grounding_query_tokens > 0

    def _query_segments(self, batch: int) -> list[Segment]:
        mq = self.config.mqformer_config
        segments = [Segment("qv", mq.num_query_tokens)]
        if self.has_grounding:
            segments.append(Segment("qg", mq.num_grounding_query_tokens))
        return segments

    def _text_positions(self, spatial_len: int, caption_len: int, batch: int, device) -> torch.Tensor:
        sp = torch.arange(spatial_len, device=device)
        start = 0 if self.config.caption_position_restart else spatial_len
        cap = torch.arange(start, start + caption_len, device=device)
        return torch.cat([sp, cap])[None].expand(batch, -1)

    def _ce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, ignore_index=-100, label_smoothing=self.config.label_smoothing)

    # --- the five passes; each builds its Figure-3 mask -------------------------------------------
    def query_pass(self, image, local_features=None, local_attention_mask=None, use_cache=False):
        """Queries only, mutually visible (ITC image side; ICG caches its keys/values)."""
        return self.mqformer(
            image_embeds=image, local_features=local_features, local_attention_mask=local_attention_mask, use_cache=use_cache
        )

    def text_pass(self, caption_ids, caption_attention_mask, spatial_ids=None, spatial_attention_mask=None):
        """Spatial text and caption, each seeing only itself (ITC text side)."""
        batch = caption_ids.shape[0]
        segments = [Segment("cap", caption_ids.shape[1], caption_attention_mask)]
        ids = caption_ids
        if spatial_ids is not None:
            segments.insert(0, Segment("sp", spatial_ids.shape[1], spatial_attention_mask))
            ids = torch.cat([spatial_ids, caption_ids], dim=1)
        spatial_len = spatial_ids.shape[1] if spatial_ids is not None else 0
        return self.mqformer(
            input_ids=ids,
            attention_mask=masks.build_mask(segments, masks.itc_text_pairs(spatial_ids is not None), batch),
            position_ids=self._text_positions(spatial_len, caption_ids.shape[1], batch, ids.device),
            include_queries=False,
        )

    def itm_pass(self, image, local_features, local_attention_mask, caption_ids, caption_attention_mask, spatial_ids=None, spatial_attention_mask=None):
        """Queries + spatial text + caption with the regionalised ITM mask."""
        batch = image.shape[0]
        segments = self._query_segments(batch)
        ids = caption_ids
        if spatial_ids is not None:
            segments.append(Segment("sp", spatial_ids.shape[1], spatial_attention_mask))
            ids = torch.cat([spatial_ids, caption_ids], dim=1)
        segments.append(Segment("cap", caption_ids.shape[1], caption_attention_mask))
        spatial_len = spatial_ids.shape[1] if spatial_ids is not None else 0
        return self.mqformer(
            image_embeds=image,
            local_features=local_features,
            local_attention_mask=local_attention_mask,
            input_ids=ids,
            position_ids=self._text_positions(spatial_len, caption_ids.shape[1], batch, ids.device),
            attention_mask=masks.build_mask(segments, masks.itm_pairs(self.has_grounding, spatial_ids is not None), batch),
        )

    def icg_pass(self, query_cache, caption_ids, caption_attention_mask):
        """[DEC] caption attending to the cached queries and causally to itself."""
        batch = caption_ids.shape[0]
        dec_ids = caption_ids.clone()
        dec_ids[:, 0] = self.config.mqformer_config.dec_token_id
        segments = self._query_segments(batch) + [Segment("cap", caption_ids.shape[1], caption_attention_mask, causal=True)]
        full = masks.build_mask(segments, masks.icg_pairs(self.has_grounding), batch)
        num_queries = self.config.mqformer_config.total_query_tokens
        return self.mqformer(input_ids=dec_ids, cache=query_cache, attention_mask=full[:, num_queries:])

    def msp_pass(self, image, local_features, local_attention_mask, msp_ids, spatial_attention_mask):
        """Queries and the [MLM] spatial text, bidirectional; the caption is absent."""
        batch = msp_ids.shape[0]
        segments = self._query_segments(batch) + [Segment("sp", msp_ids.shape[1], spatial_attention_mask)]
        return self.mqformer(
            image_embeds=image,
            local_features=local_features,
            local_attention_mask=local_attention_mask,
            input_ids=msp_ids,
            attention_mask=masks.build_mask(segments, masks.msp_pairs(self.has_grounding), batch),
        )

    # ----------------------------------------------------------------------------------------------
    def forward(
        self,
        image_embeds: torch.Tensor,
        caption_ids: torch.Tensor,
        caption_attention_mask: torch.Tensor,
        local_features: torch.Tensor | None = None,
        local_attention_mask: torch.Tensor | None = None,
        spatial_ids: torch.Tensor | None = None,
        spatial_attention_mask: torch.Tensor | None = None,
        msp_ids: torch.Tensor | None = None,
        msp_labels: torch.Tensor | None = None,
    ) -> PretrainingOutput:
        r"""One stage-1 step.

        Args:
            image_embeds (`(B, Ni, Di)`): frozen image-encoder features (before `ln_vision`).
            caption_ids, caption_attention_mask (`(B, Tc)`): "[CLS] caption [SEP]", padded.
            local_features (`(B, K, Dl)`), local_attention_mask (`(B, K)`): refiner objects.
            spatial_ids, spatial_attention_mask (`(B, Ts)`): "[BOS] spatial representation [SEP]".
            msp_ids (`(B, Ts)`): the spatial text with [MLM] first and masked objects;
            msp_labels (`(B, Ts)`): original ids at masked positions, -100 elsewhere.
        """
        cfg = self.config
        if not (cfg.use_spatial_text and spatial_ids is not None):
            spatial_ids = spatial_attention_mask = msp_ids = None
        batch, device = caption_ids.shape[0], caption_ids.device
        image = self.image_layernorm(image_embeds.to(self.image_layernorm.weight.dtype))
        losses: dict[str, torch.Tensor] = {}

        # ITC: pooled query sets against [CLS] / [BOS], negatives from every rank.
        query_out = self.query_pass(image, local_features, local_attention_mask, use_cache=cfg.use_icg)
        text_out = self.text_pass(caption_ids, caption_attention_mask, spatial_ids, spatial_attention_mask)
        pool_v = query_out.visual_query_output.mean(dim=1)
        pool_g = query_out.grounding_query_output.mean(dim=1) if self.has_grounding else pool_v
        h_cls = text_out.text_output[:, -caption_ids.shape[1]]
        h_bos = text_out.text_output[:, 0] if spatial_ids is not None else h_cls
        image_feat = torch.stack(
            [F.normalize(self.vision_proj(pool_v), dim=-1), F.normalize(self.grounding_proj(pool_g), dim=-1)], dim=1
        )
        text_feat = torch.stack(
            [F.normalize(self.text_proj(h_cls), dim=-1), F.normalize(self.spatial_proj(h_bos), dim=-1)], dim=1
        )
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
        image_all, text_all = all_gather_no_grad(image_feat), all_gather_no_grad(text_feat)
        sim_i2t = torch.einsum("bsd,nsd->bn", image_feat, text_all) / (2 * self.temp)
        sim_t2i = torch.einsum("bsd,nsd->bn", text_feat, image_all) / (2 * self.temp)
        offset = rank() * batch
        targets = torch.arange(batch, device=device) + offset
        if cfg.use_itc and cfg.itc_halves == "separate":
            halves = [(image_feat[:, h] @ text_all[:, h].T, text_feat[:, h] @ image_all[:, h].T) for h in range(2)]
            losses["itc"] = sum(self._ce(i2t / self.temp, targets) + self._ce(t2i / self.temp, targets) for i2t, t2i in halves) / 4
        elif cfg.use_itc:
            losses["itc"] = (self._ce(sim_i2t, targets) + self._ce(sim_t2i, targets)) / 2
        itc_accuracy = (sim_i2t.argmax(dim=1) == targets).float().mean().detach()

        # ITM: positives plus one hard negative text per image and one hard negative image per text,
        # drawn from every rank's samples as BLIP-2 does (the frozen features and token ids are
        # gathered; `ln_vision` runs again on the picked rows, so its gradient stays local).
        if cfg.use_itm and sim_i2t.shape[1] > 1:
            image_rows, text_rows = self._hard_negatives(sim_i2t, sim_t2i, offset)
            pad = cfg.mqformer_config.pad_token_id or 0
            world = lambda t, value=0: None if t is None else all_gather_padded(t, 1, value)  # noqa: E731
            pick = lambda t, rows: None if t is None else t[rows]  # noqa: E731
            out = self.itm_pass(
                self.image_layernorm(all_gather_no_grad(image_embeds)[image_rows].to(image.dtype)),
                pick(world(local_features), image_rows), pick(world(local_attention_mask), image_rows),
                world(caption_ids, pad)[text_rows], world(caption_attention_mask)[text_rows],
                pick(world(spatial_ids, pad), text_rows), pick(world(spatial_attention_mask), text_rows),
            )  # fmt: skip
            labels = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).long().to(device)
            loss = self._ce(self.itm_head(out.visual_query_output).mean(dim=1), labels)
            if self.has_grounding:
                loss = (loss + self._ce(self.itm_head(out.grounding_query_output).mean(dim=1), labels)) / 2
            losses["itm"] = loss

        # ICG: next-token prediction of the caption from the cached queries.
        if cfg.use_icg:
            out = self.icg_pass(query_out.cache, caption_ids, caption_attention_mask)
            logits = self.mqformer.lm_logits(out.text_output[:, :-1])
            labels = caption_ids[:, 1:].masked_fill(caption_attention_mask[:, 1:] == 0, -100)
            losses["icg"] = self._ce(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

        # MSP: restore the masked objects of the spatial text.
        keep_in_graph = None
        if cfg.use_msp and msp_ids is not None and msp_labels is not None:
            out = self.msp_pass(image, local_features, local_attention_mask, msp_ids, spatial_attention_mask)
            logits = self.mqformer.lm_logits(out.text_output)
            if (msp_labels != -100).any():
                losses["msp"] = self._ce(logits.reshape(-1, logits.shape[-1]), msp_labels.reshape(-1))
            else:
                # nothing masked in this batch: a zero that still reaches the MSP path, so that every
                # rank's backward visits the same parameters (DDP waits for all of them)
                keep_in_graph = logits.sum() * 0.0

        total = sum(losses.values()) if losses else image.sum() * 0.0
        if keep_in_graph is not None:
            total = total + keep_in_graph
        return PretrainingOutput(
            loss=total,
            loss_itc=losses.get("itc"),
            loss_itm=losses.get("itm"),
            loss_icg=losses.get("icg"),
            loss_msp=losses.get("msp"),
            itc_accuracy=itc_accuracy,
            similarity=sim_i2t.detach(),
        )

    @torch.no_grad()
    def _hard_negatives(self, sim_i2t: torch.Tensor, sim_t2i: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """BLIP-2's ITM rows: (image, text) pairs [positives | negative image per text | negative text per
        image], as indices into the gathered batch (this rank's samples start at `offset`); negatives
        are drawn with probability softmax(similarity) over every rank's samples, never the positive.

        `sim_i2t` / `sim_t2i`: `(B, B * world)`, this rank's images (texts) against all texts (images)."""
        batch, candidates = sim_i2t.shape
        same = torch.arange(batch, device=sim_i2t.device) + offset
        positive = torch.zeros(batch, candidates, dtype=torch.bool, device=sim_i2t.device)
        positive[torch.arange(batch, device=sim_i2t.device), same] = True
        weights_t2i = F.softmax(sim_t2i.float(), dim=1).masked_fill(positive, 0) + 1e-6 * ~positive
        weights_i2t = F.softmax(sim_i2t.float(), dim=1).masked_fill(positive, 0) + 1e-6 * ~positive
        neg_image = torch.multinomial(weights_t2i, 1).squeeze(1)
        neg_text = torch.multinomial(weights_i2t, 1).squeeze(1)
        return torch.cat([same, neg_image, same]), torch.cat([same, same, neg_text])

    # ----------------------------------------------------------------------------------------------
    def load_blip2(self, path) -> "LoadReport":  # noqa: F821 - documented return type
        """Initialise from a BLIP-2 / InstructBLIP / LAVIS / released-code checkpoint (paper section 3.1:
        "MQ-Former continues training on the BLIP-2 first-stage pre-training breakpoints")."""
        from lyrics.models.blip2_weights import LoadReport, copy_into, load_canonical

        mq = self.mqformer
        canonical, unused, fmt = load_canonical(path, mq.config.num_query_tokens)
        report = LoadReport(source=str(path), format=fmt, unused=list(unused))
        copy_into(mq, canonical, "mqformer.", report)
        for name in ("image_layernorm", "vision_proj", "text_proj", "itm_head"):
            copy_into(getattr(self, name), canonical, f"{name}.", report)
        if "temp" in canonical:
            with torch.no_grad():
                self.temp.copy_(canonical["temp"].reshape(1))
            report.loaded.append("temp")
        # The grounding/spatial projections start as copies of BLIP-2's visual/text projections.
        with torch.no_grad():
            self.grounding_proj.load_state_dict(self.vision_proj.state_dict())
            self.spatial_proj.load_state_dict(self.text_proj.state_dict())
        report.newly_initialized += ["grounding_proj (copy of vision_proj)", "spatial_proj (copy of text_proj)"]
        report.unused += [k for k in canonical if k.startswith("language_projection.")]
        return report
