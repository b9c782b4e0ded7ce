"""A tiny LLaMA-architecture LM pretrained on toy-world text: the stand-in for Vicuna-13B.

Lyrics' LLM is a frozen pretrained causal LM tuned with LoRA in stage 2 (paper section 3.3). The
quickstart trains a small `transformers.LlamaForCausalLM` with its own byte-level BPE tokenizer on
documents made of the train split's captions, question/answer pairs, referring expressions with
boxes in the paper's int1000 text, the spatial representation and referential dialogue, then saves
both so `AutoModelForCausalLM.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)` load
them like any Hugging Face checkpoint.

Documents are concatenated (each starts with `<s>` and ends with `</s>`) and cut into fixed-length
blocks, so no step wastes compute on padding. `evaluate_lm` reports the mean next-token loss on
held-out val documents next to the uniform baseline `ln(vocab size)`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lyrics.toyworld.standins.corpus import StandinData, lm_documents
from lyrics.toyworld.standins.training import TrainLog, epoch_order, save_atomically, seed_everything, train_loop, write_log
from lyrics.toyworld.standins.vocab import train_lm_tokenizer


@dataclass
class LMStandinConfig:
    """Architecture and budget of the LM stand-in.

    Two layers suffice for the lookups the toy needs (a previous-token head and a matching head); the
    step count is what buys them: on the default world 1500 steps (about 200 s on 2 cores) reach a
    held-out loss of ~1.0 nats per token against ln(V) ~ 7.6 for a uniform guess, and the model then
    answers about a third of colour questions from an object list alone (chance: a sixth).
    """

    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    intermediate_size: int = 344
    max_position_embeddings: int = 1024
    block_size: int = 384  # holds an object list and the conversation that reads it
    tokenizer_vocab_size: int = 2048
    steps: int = 1600
    batch_size: int = 8
    lr: float = 3e-3
    warmup: int = 50
    weight_decay: float = 0.05
    seed: int = 0
    eval_documents: int = 100
    chat_documents: bool = True  # also train on "USER: q ASSISTANT: a</s>" (an instruction-tuned LLM)

    @classmethod
    def fast(cls, **overrides) -> "LMStandinConfig":
        """A budget for `lyrics quickstart --fast` (a few seconds)."""
        values = dict(steps=100, warmup=10, eval_documents=30)
        values.update(overrides)
        return cls(**values)


def build_model(config: LMStandinConfig, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.heads,
        max_position_embeddings=config.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,  # at this width the untied head would double the parameters
    )
    return LlamaForCausalLM(llama)


def token_stream(tokenizer, documents: list[str]) -> torch.Tensor:
    """All documents as one id stream: `<s> doc </s> <s> doc </s> ...`."""
    ids = tokenizer(documents, add_special_tokens=True)["input_ids"]  # the post-processor adds <s>
    eos = tokenizer.eos_token_id
    return torch.tensor([t for doc in ids for t in (*doc, eos)], dtype=torch.long)


def blocks(stream: torch.Tensor, block_size: int) -> torch.Tensor:
    n = len(stream) // block_size
    if n == 0:
        raise ValueError(f"the LM corpus has {len(stream)} tokens, fewer than one block of {block_size}")
    return stream[: n * block_size].view(n, block_size)


@torch.no_grad()
def evaluate_lm(model, tokenizer, documents: list[str], block_size: int) -> dict[str, float]:
    """Mean next-token cross-entropy on `documents`, and the uniform baseline ln(V)."""
    model.eval()
    data = blocks(token_stream(tokenizer, documents), block_size)
    total, count = 0.0, 0
    for start in range(0, len(data), 32):
        batch = data[start : start + 32]
        loss = model(input_ids=batch, labels=batch).loss
        total += loss.item() * batch.numel()
        count += batch.numel()
    return {"loss": total / count, "uniform_loss": math.log(len(tokenizer)), "tokens": count}


def train_lm_standin(
    world_dir: str | Path, out_dir: str | Path, config: LMStandinConfig | None = None, data: StandinData | None = None
) -> TrainLog:
    """Train the LM stand-in on the world's train split, save it to `out_dir`, return its log.

    `data` lets a caller that trains several stand-ins read the world once.

    `out_dir` gets `config.json`, `generation_config.json`, `model.safetensors`, the tokenizer files
    and `train_log.json` (loss curve, held-out loss vs. uniform). Deterministic for a seed on CPU.
    """
    config = config or LMStandinConfig()
    generator = seed_everything(config.seed)
    data = data or StandinData.load(world_dir)
    train_docs = lm_documents(data.train, np.random.default_rng(config.seed), chat=config.chat_documents)
    val_docs = lm_documents(data.val[: config.eval_documents], np.random.default_rng(config.seed + 1), chat=config.chat_documents)
    tokenizer = train_lm_tokenizer(train_docs, vocab_size=config.tokenizer_vocab_size)
    model = build_model(config, tokenizer)
    train_blocks = blocks(token_stream(tokenizer, train_docs), config.block_size)
    order = epoch_order(len(train_blocks), config.steps * config.batch_size, generator)

    def batch_at(step: int) -> dict[str, torch.Tensor]:
        rows = train_blocks[order[step * config.batch_size : (step + 1) * config.batch_size]]
        return {"input_ids": rows, "labels": rows}

    def loss_fn(model, batch):
        return model(**batch).loss

    log = train_loop("lm_standin", asdict(config), model, batch_at, loss_fn, config.steps, config.lr, config.warmup, config.weight_decay)
    log.metrics["train_tokens"] = int(train_blocks.numel())
    log.metrics["uniform_loss"] = math.log(len(tokenizer))
    if val_docs:
        log.metrics["val"] = evaluate_lm(model, tokenizer, val_docs, config.block_size)

    log.world = data.world

    def write(directory: Path) -> None:
        model.save_pretrained(str(directory))
        tokenizer.save_pretrained(str(directory))
        write_log(directory, log)

    save_atomically(out_dir, write)
    return log
