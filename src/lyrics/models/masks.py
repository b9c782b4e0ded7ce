"""Self-attention masks of the four pre-training objectives (paper section 3.2, Figure 3).

A pass through the MQ-Former is a concatenation of *segments*: visual queries `qv`, grounding queries
`qg`, the spatial representation `sp` ([BOS] or [MLM] first) and the caption `cap` ([CLS] or [DEC]
first). Each objective decides which segment may attend to which:

* ITC  - image side: queries only, mutually visible; text side: `sp` and `cap` each see themselves
         ("we mutually mask the text and image transformers to avoid information leak").
* ITM  - regionalised bidirectional mask: `qv` <-> `cap`, `qg` <-> `sp`, each segment sees itself,
         nothing else.
* ICG  - queries see queries; `cap` sees all queries and itself causally; `sp` is absent.
* MSP  - queries and `sp` bidirectional; `cap` is absent ("entirely masked").

The ablations of Table 4 change who plays which part: without grounding queries the visual queries
take both roles; without the spatial representation the caption does. `slot_pairs` encodes that.

Masks are boolean `(B, L, L)` tensors, True = may attend; padded keys are never visible.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch


@dataclass
class Segment:
    """A run of positions in one pass. `padding` is `(B, length)` with 1 for real tokens, or None."""

    name: str
    length: int
    padding: torch.Tensor | None = None
    causal: bool = False


def build_mask(segments: Sequence[Segment], visible: Iterable[tuple[str, str]], batch: int) -> torch.Tensor:
    """`(B, L, L)` mask where position i (in segment a) may attend position j (in segment b) iff
    `(a, b)` is in `visible`, j is not padding, and, within a causal segment, j <= i."""
    visible = set(visible)
    total = sum(s.length for s in segments)
    device = next((s.padding.device for s in segments if s.padding is not None), torch.device("cpu"))
    mask = torch.zeros(batch, total, total, dtype=torch.bool, device=device)
    starts, offset = {}, 0
    for seg in segments:
        starts[seg.name] = offset
        offset += seg.length
    for a in segments:
        for b in segments:
            if (a.name, b.name) not in visible:
                continue
            ra, rb = starts[a.name], starts[b.name]
            block = torch.ones(a.length, b.length, dtype=torch.bool, device=device)
            if a is b and a.causal:
                block = torch.tril(block)
            mask[:, ra : ra + a.length, rb : rb + b.length] = block
    key_padding = torch.cat(
        [
            s.padding.bool() if s.padding is not None else torch.ones(batch, s.length, dtype=torch.bool, device=device)
            for s in segments
        ],
        dim=1,
    )
    return mask & key_padding[:, None, :]


def _self(*names: str) -> set[tuple[str, str]]:
    return {(n, n) for n in names}


def _both(a: str, b: str) -> set[tuple[str, str]]:
    return {(a, b), (b, a)}


def itc_text_pairs(has_spatial: bool) -> set[tuple[str, str]]:
    return _self("sp", "cap") if has_spatial else _self("cap")


def itm_pairs(has_grounding: bool, has_spatial: bool) -> set[tuple[str, str]]:
    """Regionalised ITM: visual queries with the caption, grounding queries with the spatial text.

    Without grounding queries the visual queries interact with both texts; without the spatial text
    the grounding queries interact with the caption."""
    pairs = _self("qv", "cap") | _both("qv", "cap")
    if has_spatial:
        pairs |= _self("sp") | _both("qg" if has_grounding else "qv", "sp")
    if has_grounding:
        pairs |= _self("qg") | _both("qg", "sp" if has_spatial else "cap")
    return pairs


def query_pairs(has_grounding: bool) -> set[tuple[str, str]]:
    names = ("qv", "qg") if has_grounding else ("qv",)
    return {(a, b) for a in names for b in names}


def icg_pairs(has_grounding: bool) -> set[tuple[str, str]]:
    """Caption rows of the ICG text pass: all queries (cached) and the caption itself (causal)."""
    pairs = {("cap", "qv"), ("cap", "cap")}
    if has_grounding:
        pairs.add(("cap", "qg"))
    return pairs | query_pairs(has_grounding)


def msp_pairs(has_grounding: bool) -> set[tuple[str, str]]:
    names = ("qv", "qg", "sp") if has_grounding else ("qv", "sp")
    return {(a, b) for a in names for b in names}
