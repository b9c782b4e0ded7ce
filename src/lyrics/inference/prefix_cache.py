"""Greedy answers to many prompts that share one prefix, with the prefix encoded once.

Evaluation asks many questions about one image (POPE's three samplings, several VQA and REC
questions): each prompt is the same image tokens and spatial text followed by a short question, and
the prefix is most of its tokens (about 200 of 215 in the toy world). Encoding that prefix once and
answering every question from its KV cache is what vLLM calls automatic prefix caching; here it is
done for one group of prompts at a time, with transformers' `DynamicCache`:

1. one forward pass over the prefix embeddings (image placeholders already replaced) fills a cache;
2. the cache is copied once per batch of suffixes, the suffixes are left-padded *after* the prefix
   (`[prefix][pad...][suffix]`, the pads masked out) and each real token gets the position it has in
   the unshared prompt, so every answer token sees exactly the keys and positions it would see there;
3. greedy decoding goes on token by token until every row has emitted an end-of-sequence id.

The arithmetic is that of `generate` on the whole prompt, in another order of summation, so an answer
differs only where two logits tie to within rounding (a test compares it with one-prompt-at-a-time
`generate`). This loop replaces `generate` only for plain greedy decoding: `shareable` refuses a
generation config with logit processors (repetition penalty, bad words, ...) that the loop lacks.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable, Sequence

import torch

# Generation-config fields whose non-default value changes greedy decoding; the loop has none of them.
_PROCESSORS = {
    "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "min_new_tokens": None, "min_length": 0, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "sequence_bias": None, "encoder_repetition_penalty": 1.0,
}  # fmt: skip


def shareable(llm) -> bool:
    """Whether `llm`'s generation config leaves greedy decoding plain (so this loop matches it)."""
    config = getattr(llm, "generation_config", None)
    if config is None:
        return True
    return all(getattr(config, name, default) in (default, None, [], 0) for name, default in _PROCESSORS.items())


def _cache_name(llm) -> str:
    """The forward keyword of the KV cache: transformers 5.25 names it `cache` (the old `past_key_values` warns);
    the older 5.x releases this package allows take only `past_key_values`."""
    return "cache" if "cache" in inspect.signature(type(llm).forward).parameters else "past_key_values"


def common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix every row starts with, leaving each row one token of its own
    (the first answer token is predicted from the last prompt token, which must go through the model)."""
    shortest = min(len(r) for r in rows)
    n = 0
    while n < shortest - 1 and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


@torch.inference_mode()
def greedy_after_prefix(
    llm,
    prefix_embeds: torch.Tensor,
    suffixes: Sequence[Sequence[int]],
    max_new_tokens: int,
    eos_token_ids: Iterable[int],
    pad_token_id: int,
    batch_size: int | None = None,
) -> list[list[int]]:
    """Greedy new tokens for each `prefix + suffix` (cut after the first end-of-sequence id).

    Args:
        llm: a transformers causal LM (`LlamaForCausalLM` and the like: `inputs_embeds`,
            `position_ids` and a KV cache).
        prefix_embeds (`(1, P, H)`): input embeddings of the shared prefix.
        suffixes: token ids that follow the prefix, one list per prompt (each non-empty).
        batch_size: suffixes decoded together (None: all).
    """
    if any(len(s) == 0 for s in suffixes):
        raise ValueError("every prompt needs at least one token after the shared prefix")
    device = prefix_embeds.device
    eos = torch.tensor(sorted(set(eos_token_ids)), device=device)
    start = prefix_embeds.shape[1]
    name = _cache_name(llm)
    cache = getattr(llm(inputs_embeds=prefix_embeds, use_cache=True), name)
    step = batch_size or len(suffixes)
    out: list[list[int]] = []
    for first in range(0, len(suffixes), step):
        chunk = suffixes[first : first + step]
        n, width = len(chunk), max(len(s) for s in chunk)
        ids = torch.full((n, width), pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros(n, start + width, dtype=torch.long, device=device)
        mask[:, :start] = 1
        for i, s in enumerate(chunk):
            ids[i, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
            mask[i, start + width - len(s) :] = 1
        # the position each token has in its own unshared prompt (pads get the first suffix position)
        positions = start + (mask[:, start:].cumsum(1) - 1).clamp(min=0)
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(n)
        logits = llm(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{name: past}).logits
        tokens = torch.empty(n, 0, dtype=torch.long, device=device)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        for _ in range(max_new_tokens):
            nxt = logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad_token_id), nxt)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            done |= torch.isin(nxt, eos)
            if bool(done.all()) or tokens.shape[1] == max_new_tokens:
                break
            mask = torch.cat([mask, mask.new_ones(n, 1)], dim=1)
            positions = positions[:, -1:] + 1
            logits = llm(input_ids=nxt[:, None], attention_mask=mask, position_ids=positions, use_cache=True, **{name: past}).logits
        for row in tokens.tolist():
            hits = [k for k, t in enumerate(row) if t in set(eos.tolist())]
            out.append(row[: hits[0] + 1] if hits else row)
    return out
