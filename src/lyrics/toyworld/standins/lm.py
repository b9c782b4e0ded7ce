"""A tiny LLaMA-architecture LM pretrained on toy-world text: the stand-in for Vicuna-13B.

Lyrics' LLM is a frozen pretrained causal LM tuned with LoRA in stage 2 (paper section 3.3). The
quickstart trains a small `transformers.LlamaForCausalLM` with its own byte-level BPE tokenizer on
documents made of the train split's captions, question/answer pairs, referring expressions with
boxes in the paper's int1000 text, the spatial representation and referential dialogue, plus reading
drills (an object list and one question about it, loss on the answer only), then saves
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

from lyrics.models.processing import IGNORE_INDEX
from lyrics.toyworld.standins.corpus import Document, StandinData, document_text, lm_documents
from lyrics.toyworld.standins.training import TrainLog, epoch_order, save_atomically, seed_everything, train_loop, write_log
from lyrics.toyworld.standins.vocab import train_lm_tokenizer


@dataclass
class LMStandinConfig:
    """Architecture and budget of the LM stand-in.

    Two layers suffice for the lookups the toy needs (a previous-token head and a matching head); the
    step count, dense reading drills (`corpus.reading_drill`) and their loss weight are what buy them.
    Measured on the default world's val object lists (greedy answers): after 1000 steps colour read
    from the list 23-44% (two runs differing only in thread count; chance: a sixth), the box of a
    named tag 18-19%; after 2000 steps (the output layer applied to supervised positions only, so in
    about the old time of 1000) colour 58-70% and box 28-31% with drill weight 3 or 10. Existence is
    not learned: every existence question gets one answer ("yes" at 2000 steps).
    """

    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    intermediate_size: int = 344
    max_position_embeddings: int = 1024
    block_size: int = 128  # holds one reading drill (an object list, a question, its answer)
    tokenizer_vocab_size: int = 2048
    steps: int = 2000
    batch_size: int = 24
    lr: float = 3e-3
    warmup: int = 50
    weight_decay: float = 0.05
    seed: int = 0
    eval_documents: int = 100
    chat_documents: bool = True  # also train on reading drills "USER: Objects: ... q ASSISTANT: a</s>"
    drills_per_image: int = 4
    # Loss weight of reading-drill answers against plain text: the drills hold a few percent of the
    # supervised tokens, so unweighted they would teach reading at a few percent of the learning rate.
    drill_weight: float = 3.0

    @classmethod
    def fast(cls, **overrides) -> "LMStandinConfig":
        """A budget for `lyrics quickstart --fast` (a few seconds)."""
        values = dict(steps=100, warmup=10, eval_documents=30, drills_per_image=1)  # formats first: more plain text
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


def token_stream(tokenizer, documents: list[Document], drill_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All documents as one id stream `<s> doc </s> <s> doc </s> ...`, its labels (the ids, with
    -100 where a segment carries no loss and on each `<s>`) and per-token loss weights
    (`drill_weight` in reading drills, the documents of several segments, else 1). Segments are
    tokenized one by one, as the stage-2 processor tokenizes prompt and answer pieces."""
    texts = [text for doc in documents for text, _ in doc]
    encoded = iter(tokenizer(texts, add_special_tokens=False)["input_ids"])
    ids: list[int] = []
    labels: list[int] = []
    weights: list[float] = []
    for doc in documents:
        start = len(ids)
        ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE_INDEX)
        for _, supervised in doc:
            piece = next(encoded)
            ids += piece
            labels += piece if supervised else [IGNORE_INDEX] * len(piece)
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
        weights += [drill_weight if len(doc) > 1 else 1.0] * (len(ids) - start)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long), torch.tensor(weights)


def blocks(stream: torch.Tensor, block_size: int) -> torch.Tensor:
    n = len(stream) // block_size
    if n == 0:
        raise ValueError(f"the LM corpus has {len(stream)} tokens, fewer than one block of {block_size}")
    return stream[: n * block_size].view(n, block_size)


@torch.no_grad()
def evaluate_lm(model, tokenizer, documents: list[Document], block_size: int) -> dict[str, float]:
    """Mean next-token cross-entropy on the supervised tokens of `documents`, and the uniform
    baseline ln(V)."""
    model.eval()
    ids, labels, _ = (blocks(t, block_size) for t in token_stream(tokenizer, documents))
    total, count = 0.0, 0
    for start in range(0, len(ids), 32):
        batch, target = ids[start : start + 32], labels[start : start + 32]
        n = int((target[:, 1:] != IGNORE_INDEX).sum())  # the tokens the loss averages over
        if n == 0:
            continue
        total += supervised_loss(model, batch, target).item() * n
        count += n
    return {"loss": total / count, "uniform_loss": math.log(len(tokenizer)), "tokens": count}


def supervised_loss(model, input_ids: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The causal-LM loss of `model(input_ids, labels=labels).loss` (weighted per token by `weights`,
    when given), with the output layer applied only where a label exists. In a reading drill only the
    answer carries loss, and at this width the 2048-way output layer costs more than both transformer
    layers, so skipping it on the unsupervised positions roughly halves the step time."""
    hidden = model.model(input_ids=input_ids).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    losses = torch.nn.functional.cross_entropy(model.lm_head(hidden[keep]).float(), targets[keep], reduction="none")
    if weights is None:
        return losses.mean()
    w = weights[:, 1:][keep]
    return (losses * w).sum() / w.sum()


def fit_lm(config: LMStandinConfig, tokenizer, documents: list[Document], generator: torch.Generator):
    """Build the stand-in for `tokenizer` and train it on `documents` (blocks of `config.block_size`,
    loss on supervised segments only); returns `(model, log)`. `generator` orders the blocks; seed
    the global RNG first (`seed_everything`), which initialises the model."""
    model = build_model(config, tokenizer)
    stream = token_stream(tokenizer, documents, config.drill_weight)
    train_blocks, train_labels, train_weights = (blocks(t, config.block_size) for t in stream)
    keep = (train_labels[:, 1:] != IGNORE_INDEX).any(dim=1)  # a block inside one object list has no loss
    train_blocks, train_labels, train_weights = train_blocks[keep], train_labels[keep], train_weights[keep]
    order = epoch_order(len(train_blocks), config.steps * config.batch_size, generator)

    def batch_at(step: int) -> dict[str, torch.Tensor]:
        rows = order[step * config.batch_size : (step + 1) * config.batch_size]
        return {"input_ids": train_blocks[rows], "labels": train_labels[rows], "weights": train_weights[rows]}

    def loss_fn(model, batch):
        return supervised_loss(model, batch["input_ids"], batch["labels"], batch["weights"])

    log = train_loop("lm_standin", asdict(config), model, batch_at, loss_fn, config.steps, config.lr, config.warmup, config.weight_decay)
    log.metrics["train_tokens"] = int(train_blocks.numel())
    log.metrics["uniform_loss"] = math.log(len(tokenizer))
    return model, log


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
    train_docs = lm_documents(data.train, np.random.default_rng(config.seed), chat=config.chat_documents, drills_per_image=config.drills_per_image)
    val_docs = lm_documents(
        data.val[: config.eval_documents], np.random.default_rng(config.seed + 1), chat=config.chat_documents, drills_per_image=config.drills_per_image
    )
    tokenizer = train_lm_tokenizer(map(document_text, train_docs), vocab_size=config.tokenizer_vocab_size)
    model, log = fit_lm(config, tokenizer, train_docs, generator)
    if val_docs:
        log.metrics["val"] = evaluate_lm(model, tokenizer, val_docs, config.block_size)

    log.world = data.world

    def write(directory: Path) -> None:
        model.save_pretrained(str(directory))
        tokenizer.save_pretrained(str(directory))
        write_log(directory, log)

    save_atomically(out_dir, write)
    return log
