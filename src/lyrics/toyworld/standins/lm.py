"""A tiny LLaMA-architecture LM pretrained on toy-world text: the stand-in for Vicuna-13B.

Lyrics' LLM is a frozen pretrained causal LM tuned with LoRA in stage 2 (paper section 3.3). The
quickstart trains a small `transformers.LlamaForCausalLM` with its own byte-level BPE tokenizer on
documents made of the train split's captions, question/answer pairs, referring expressions with
boxes in the paper's int1000 text, the spatial representation and referential dialogue, plus reading
drills (an object list and one question about it, loss on the answer only), then saves
both so `AutoModelForCausalLM.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)` load
them like any Hugging Face checkpoint.

Documents (each `<s> ... </s>`) are concatenated and cut into fixed-length blocks (`stream_blocks`), so
no step computes padding; `pack_drills` packs them instead so that every reading drill lies whole in
one block (`pack_blocks`). `evaluate_lm` reports the mean next-token loss on
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
    Measured on the default world's val object lists (greedy answers, `bench/lm_reading.py`), 2000
    steps, "Where is the <tag>?" for box questions: cut from one stream into 128-token blocks, colour
    read from the list 58-70% (chance: a sixth), box 28-31%; with `pack_drills` (256-token blocks of
    12) 64.5% and 36.2%; packed with 8 drills per image instead of 4, colour 61-66% and box 49-54%
    (also with `isolate_documents`). Existence is learned by none of these, nor by 3 layers (49%), nor
    from existence drills alone (600 steps): it needs the asked tag matched against every listed
    tag, colour and shape together. Box questions asking the image's referring expressions instead
    of tags ("Where is the small red triangle?"), packed, 8 per image: colour 79%, box 45.5%. The box
    scores come from short lists: by list length the default gets 92% with one object listed, 28%
    with two or three, 7% with four or more; it copies a box but does not pick the asked one. Nor
    does this model learn that pick from fresh random lists alone in 1500 steps (`bench/lm_lookup.py`).
    """

    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    intermediate_size: int = 344
    max_position_embeddings: int = 1024
    block_size: int = 128  # with `pack_drills`, 256: the longest reading drill (8 objects) is ~170 tokens
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
    # Pack the corpus with every reading drill whole in one block (`pack_blocks`) instead of cutting one
    # stream into blocks (`stream_blocks`), and with `isolate_documents` let each document attend to
    # itself only. Both make the LM alone read lists better (class docstring) but, measured end to
    # end, not the stage-2 model: off by default (docs/toy-model.md).
    pack_drills: bool = False
    isolate_documents: bool = False
    # Questions per reading drill (turns about one object list), and the std of the initial weights
    # (LlamaConfig.initializer_range). Together, 8 and 0.1 are what let existence be learned on random
    # lists (`bench/lm_lookup.py`: 90-99% where one question or std 0.02 stay at chance), and on val
    # lists (`bench/lm_reading.py --pack --isolate --block-size 384 --drill-questions 8 --init-std 0.1`:
    # existence 82%, colour 78%, box still not picked). Not the default yet: end to end (with
    # block_size 384, batch_size 8, 1600 steps) test colour VQA rose to 57.1 and VQA existence to
    # 63.5, but the stage-2 model answers POPE's prompt "no" 95% of the time (F1 18) and REC fell to
    # 1.75 (docs/toy-model.md).
    drill_questions: int = 1
    initializer_range: float = 0.02
    # Probes of stage 2's POPE, none the default (docs/toy-model.md, with the numbers):
    # drills list at least this many of the image's objects (`reading_drill(min_objects=...)`; 8 =
    # the whole image, as POPE's prompt does: the only end-to-end run with POPE F1 above always-yes,
    # barely, and REC fell); weigh their colour, existence and box questions (`kinds`; 1:4:1 let the
    # LM alone read POPE in 1800 steps as well as 4000 unweighted, not the stage-2 model); and put a
    # caption before the list in this share of drills (`prefix`, where stage 2 puts the image tokens).
    drill_min_objects: int = 1
    drill_kinds: tuple[float, float, float] | None = None
    drill_prefix: float = 0.0

    def __post_init__(self) -> None:
        if self.isolate_documents and not self.pack_drills:
            # Cut from one stream, a block has no document boundaries to isolate.
            raise ValueError("LMStandinConfig.isolate_documents needs pack_drills=True")

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
        initializer_range=config.initializer_range,
    )
    return LlamaForCausalLM(llama)


def _encode(tokenizer, documents: list[Document], drill_weight: float) -> list[tuple[list[int], list[int], list[float]]]:
    """Each document as `(ids, labels, weights)`: `<s> doc </s>`, the ids with -100 where a segment
    carries no loss and on `<s>`, and `drill_weight` per token in a reading drill (a document of
    several segments), else 1. Segments are tokenized one by one, as the stage-2 processor tokenizes
    prompt and answer pieces."""
    texts = [text for doc in documents for text, _ in doc]
    encoded = iter(tokenizer(texts, add_special_tokens=False)["input_ids"])
    out = []
    for doc in documents:
        ids, labels = [tokenizer.bos_token_id], [IGNORE_INDEX]
        for _, supervised in doc:
            piece = next(encoded)
            ids += piece
            labels += piece if supervised else [IGNORE_INDEX] * len(piece)
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
        out.append((ids, labels, [drill_weight if len(doc) > 1 else 1.0] * len(ids)))
    return out


def token_stream(tokenizer, documents: list[Document], drill_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """All documents as one stream `<s> doc </s> <s> doc </s> ...`: `input_ids`, `labels` and
    per-token loss `weights` (see `_encode`)."""
    ids: list[int] = []
    labels: list[int] = []
    weights: list[float] = []
    for doc_ids, doc_labels, doc_weights in _encode(tokenizer, documents, drill_weight):
        ids += doc_ids
        labels += doc_labels
        weights += doc_weights
    return {"input_ids": torch.tensor(ids, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long), "weights": torch.tensor(weights)}


def stream_blocks(tokenizer, documents: list[Document], block_size: int, drill_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """`token_stream` cut into blocks of `block_size` (the remainder dropped): no padding, but a
    document may straddle two blocks and share one with its neighbours (see `pack_blocks`)."""
    stream = token_stream(tokenizer, documents, drill_weight)
    n = len(stream["input_ids"]) // block_size
    if n == 0:
        raise ValueError(f"the LM corpus has {len(stream['input_ids'])} tokens, fewer than one block of {block_size}")
    return {name: t[: n * block_size].view(n, block_size) for name, t in stream.items()}


def pack_blocks(tokenizer, documents: list[Document], block_size: int, drill_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """`documents` packed into blocks of `block_size` tokens in which every reading drill lies whole
    and attends to itself only: `input_ids`, `labels`, `weights` and `position_ids`, which restart at
    0 on every document so that transformers' Llama masks attention per document (packed-sequence
    detection) and gives each document the positions it has alone.

    Cut from one stream, half the drills would straddle a block boundary and leave their answer in a
    block without the object list it must be read from; and a drill that could see the drills before
    it in its block would find the asked tag in another image's list. Both teach the answer's prior
    instead of reading. Plain documents flow across boundaries and fill the room that a drill which
    does not fit leaves (it waits for the next block), so almost nothing is padded; drills longer than
    a block are dropped (`block_size` should hold the longest list)."""
    rows: list[list[list]] = []
    current: list[list] = [[], [], [], []]
    waiting: list[list[list]] = []

    def add(piece) -> None:
        for part, new in zip(current, piece):
            part += new

    def room() -> int:
        return block_size - len(current[0])

    def next_block() -> None:
        nonlocal current
        rows.append(current)
        current = [[], [], [], []]
        while waiting and len(waiting[0][0]) <= room():
            add(waiting.pop(0))

    for document, (ids, labels, weights) in zip(documents, _encode(tokenizer, documents, drill_weight)):
        doc = [ids, labels, weights, list(range(len(ids)))]
        if len(document) > 1:  # a reading drill
            if len(ids) > block_size:
                continue
            if len(ids) <= room():
                add(doc)
            else:
                waiting.append(doc)
            continue
        start = 0
        while start < len(ids):
            take = min(room(), len(ids) - start)
            add([part[start : start + take] for part in doc[:3]] + [list(range(take))])
            start += take
            if room() == 0:
                next_block()
    while waiting or current[0]:
        pad = room()
        add([[tokenizer.pad_token_id] * pad, [IGNORE_INDEX] * pad, [0.0] * pad, list(range(pad))])
        next_block()
    return {
        "input_ids": torch.tensor([r[0] for r in rows], dtype=torch.long),
        "labels": torch.tensor([r[1] for r in rows], dtype=torch.long),
        "weights": torch.tensor([r[2] for r in rows]),
        "position_ids": torch.tensor([r[3] for r in rows], dtype=torch.long),
    }


@torch.no_grad()
def evaluate_lm(model, tokenizer, documents: list[Document], block_size: int) -> dict[str, float]:
    """Mean next-token cross-entropy on the supervised tokens of `documents`, and the uniform
    baseline ln(V)."""
    model.eval()
    packed = stream_blocks(tokenizer, documents, block_size)
    total, count = 0.0, 0
    for start in range(0, len(packed["input_ids"]), 32):
        batch = {name: t[start : start + 32] for name, t in packed.items()}
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())  # the tokens the loss averages over
        if n == 0:
            continue
        total += supervised_loss(model, batch["input_ids"], batch["labels"]).item() * n
        count += n
    return {"loss": total / count, "uniform_loss": math.log(len(tokenizer)), "tokens": count}


def supervised_loss(
    model, input_ids: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None, position_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """The causal-LM loss of `model(input_ids, labels=labels).loss` (weighted per token by `weights`,
    when given), with the output layer applied only where a label exists. In a reading drill only the
    answer carries loss, and at this width the 2048-way output layer costs more than both transformer
    layers, so skipping it on the unsupervised positions roughly halves the step time."""
    # No cache: with one, transformers would not read packed documents from restarting `position_ids`.
    hidden = model.model(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state[:, :-1]
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
    if config.pack_drills:
        packed = pack_blocks(tokenizer, documents, config.block_size, config.drill_weight)
        if not config.isolate_documents:
            del packed["position_ids"]
    else:
        packed = stream_blocks(tokenizer, documents, config.block_size, config.drill_weight)
    keep = (packed["labels"][:, 1:] != IGNORE_INDEX).any(dim=1)  # a block inside one object list has no loss
    packed = {name: t[keep] for name, t in packed.items()}
    n_blocks = len(packed["input_ids"])
    order = epoch_order(n_blocks, config.steps * config.batch_size, generator)

    def batch_at(step: int) -> dict[str, torch.Tensor]:
        rows = order[step * config.batch_size : (step + 1) * config.batch_size]
        return {name: t[rows] for name, t in packed.items()}

    def loss_fn(model, batch):
        return supervised_loss(model, batch["input_ids"], batch["labels"], batch["weights"], batch.get("position_ids"))

    log = train_loop("lm_standin", asdict(config), model, batch_at, loss_fn, config.steps, config.lr, config.warmup, config.weight_decay)
    log.metrics["train_tokens"] = int(packed["input_ids"].numel())
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
    drills = dict(
        chat=config.chat_documents, drills_per_image=config.drills_per_image, drill_questions=config.drill_questions,
        drill_min_objects=config.drill_min_objects, drill_kinds=config.drill_kinds, drill_prefix=config.drill_prefix,
    )  # fmt: skip
    train_docs = lm_documents(data.train, np.random.default_rng(config.seed), **drills)
    val_docs = lm_documents(data.val[: config.eval_documents], np.random.default_rng(config.seed + 1), **drills)
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
