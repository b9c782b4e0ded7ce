"""Stage-1 batches: caption + refiner record -> the token tensors of the four objectives.

The spatial representation is tokenised piece by piece (markup, tag, each coordinate) so that every
token knows which object it belongs to; MSP's whole-object masking (paper section 3.2: "a 15%
probability to randomly replace all tokens with the spatial representation of a whole visual object
with the special token [MASK]") then masks units, not WordPiece fragments. The masking RNG is seeded
by (seed, epoch, sample index), so a resumed run masks exactly what the uninterrupted run masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lyrics.configuration import LyricsConfig
from lyrics.models.processing import pad_local_features
from lyrics.refiner.record import RefinerRecord
from lyrics.refiner.spatial import clean_tag, format_coordinate


@dataclass
class PretrainingExample:
    """One image-caption pair with its refiner record and (cached) image-encoder features."""

    caption: str
    record: RefinerRecord | None = None
    image_embeds: torch.Tensor | None = None  # (Ni, Di), before ln_vision
    pixel_values: torch.Tensor | None = None  # (3, H, W), when features are computed on the fly
    index: int = 0


class PretrainingCollator:
    """Builds the stage-1 batch of `LyricsForPretraining.forward`.

    Args:
        tokenizer: the MQ-Former tokenizer (see `lyrics.tokenization.prepare_mqformer_tokenizer`).
        config: the `LyricsConfig` (coordinate format and style, MSP settings, special-token ids).
        max_caption_tokens: "[CLS] caption [SEP]" is cut to this length (BLIP-2 uses 32).
        max_spatial_tokens: "[BOS] objects [SEP]" keeps whole objects, highest score first, up to this.
    """

    def __init__(self, tokenizer: Any, config: LyricsConfig, max_caption_tokens: int = 32, max_spatial_tokens: int = 160, seed: int = 0):
        self.tokenizer = tokenizer
        self.config = config
        self.mq = config.mqformer_config
        self.refiner = config.refiner_config
        self.max_caption_tokens = max_caption_tokens
        self.max_spatial_tokens = max_spatial_tokens
        self.seed = seed
        self.epoch = 0
        self._piece_cache: dict[str, list[int]] = {}

    # --- tokenisation ---------------------------------------------------------------------------
    def _ids(self, piece: str) -> list[int]:
        if piece not in self._piece_cache:
            self._piece_cache[piece] = self.tokenizer(piece, add_special_tokens=False)["input_ids"]
        return self._piece_cache[piece]

    def _object_pieces(self, tag: str, box) -> list[tuple[str, str]]:
        """(text, kind) pieces of one object; kind is "markup", "tag", "coord" or "punct"."""
        fmt = self.refiner.coordinate_format
        coords = [format_coordinate(v, fmt) for v in box]
        if self.refiner.spatial_format == "released":
            pieces = [(clean_tag(tag), "tag"), (":", "punct"), ("[", "punct")]
            for i, c in enumerate(coords):
                pieces += [(c, "coord")] + ([(",", "punct")] if i < 3 else [])
            return pieces + [("]", "punct")]
        box_pieces = [("(", "punct"), (coords[0], "coord"), (",", "punct"), (coords[1], "coord"), (")", "punct"),
                      (",", "punct"), ("(", "punct"), (coords[2], "coord"), (",", "punct"), (coords[3], "coord"), (")", "punct")]  # fmt: skip
        return [("<br>", "markup"), ("<T>", "markup"), (clean_tag(tag), "tag"), ("</T>", "markup"), ("<Bbox>", "markup"),
                *box_pieces, ("</Box>", "markup"), ("</br>", "markup")]  # fmt: skip

    def spatial_tokens(self, record: RefinerRecord | None) -> tuple[list[int], list[int]]:
        """Token ids of "[BOS] objects [SEP]" and, per token, its MSP unit (-1: never masked).

        "object" units (paper): an object's tag and box text form one unit; markup stays visible.
        "component" units (released code): the tag is one unit and each coordinate another.
        Objects are kept whole, in record order (highest score first), while they fit the budget.
        """
        ids, units = [self.mq.bos_token_id], [-1]
        whole_objects = self.config.msp_unit == "object"
        separator = self._ids("[SEP]") if self.refiner.spatial_format == "released" else []
        next_unit = 0
        for k, obj in enumerate(record.objects if record is not None else []):
            obj_ids, obj_units = ([*separator], [-1] * len(separator)) if k else ([], [])
            unit = next_unit
            for text, kind in self._object_pieces(obj.tag, obj.box_norm):
                piece = self._ids(text)
                if kind == "markup" or (kind == "punct" and not whole_objects):
                    piece_unit = -1
                elif whole_objects:
                    piece_unit = next_unit
                else:
                    piece_unit, unit = unit, unit + 1
                obj_ids += piece
                obj_units += [piece_unit] * len(piece)
            if len(ids) + len(obj_ids) + 1 > self.max_spatial_tokens:
                break
            ids += obj_ids
            units += obj_units
            next_unit = next_unit + 1 if whole_objects else unit
        return ids + [self.mq.sep_token_id], units + [-1]

    def caption_tokens(self, caption: str) -> list[int]:
        body = self.tokenizer(caption, add_special_tokens=False)["input_ids"][: self.max_caption_tokens - 2]
        return [self.mq.cls_token_id, *body, self.mq.sep_token_id]

    # --- MSP masking ----------------------------------------------------------------------------
    def mask_units(self, ids: list[int], units: list[int], index: int) -> tuple[list[int], list[int]]:
        """Replace every token of each chosen unit by [MASK]; at least one unit per sample that has any."""
        num_units = max(units) + 1
        masked = list(ids)
        labels = [-100] * len(ids)
        masked[0] = self.mq.mlm_token_id
        if num_units <= 0:
            return masked, labels
        generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) & 0x7FFFFFFF)
        chosen = torch.rand(num_units, generator=generator) < self.config.msp_probability
        if not chosen.any():
            chosen[torch.randint(num_units, (1,), generator=generator)] = True
        for i, u in enumerate(units):
            if u >= 0 and chosen[u]:
                labels[i] = ids[i]
                masked[i] = self.mq.mask_token_id
        return masked, labels

    # --- batching ------------------------------------------------------------------------------
    def _pad(self, rows: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        out = torch.full((len(rows), width), value, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        return out, mask

    def __call__(self, examples: list[PretrainingExample]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        if all(e.image_embeds is not None for e in examples):
            batch["image_embeds"] = torch.stack([e.image_embeds.float() for e in examples])
        elif all(e.pixel_values is not None for e in examples):
            batch["pixel_values"] = torch.stack([e.pixel_values for e in examples])
        else:
            raise ValueError("every example needs image_embeds, or every example needs pixel_values")
        pad = self.mq.pad_token_id or 0
        batch["caption_ids"], batch["caption_attention_mask"] = self._pad([self.caption_tokens(e.caption) for e in examples], pad)

        if self.mq.num_grounding_query_tokens:
            features = [
                e.record.local_features if e.record is not None else torch.zeros(0, self.mq.local_feature_size)
                for e in examples
            ]
            batch["local_features"], batch["local_attention_mask"] = pad_local_features(
                features, self.mq.local_feature_size, self.refiner.max_objects
            )
        if self.config.use_spatial_text:
            spatial = [self.spatial_tokens(e.record) for e in examples]
            batch["spatial_ids"], batch["spatial_attention_mask"] = self._pad([ids for ids, _ in spatial], pad)
            msp = [self.mask_units(ids, units, e.index) for (ids, units), e in zip(spatial, examples)]
            batch["msp_ids"], _ = self._pad([m for m, _ in msp], pad)
            batch["msp_labels"], _ = self._pad([lab for _, lab in msp], -100)
        return batch
