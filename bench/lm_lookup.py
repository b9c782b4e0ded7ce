"""Can a from-scratch LM of the stand-in's size learn to look an object up in a list, in the budget?

`bench/lm_reading.py` measures the trained LM stand-in on toy-world lists. This script isolates the
skill it lacks: random object lists in the spatial representation the stage-2 prompt uses
(`<br><T>colour shape</T><Bbox>(x1,y1),(x2,y2)</Box></br>`), one question, loss on the answer
only, nothing else in the corpus, every list fresh. A word-level vocabulary (one token per word, tag
part, punctuation mark and number) removes tokenisation from the question. The model is
transformers' Llama at `LMStandinConfig`'s width, depth and heads.

  * where: "Where is the <tag>?" -> the tag's box. Scored teacher-forced per answer token, so the
    first coordinate shows the lookup (chance with k listed: 1/k) and the rest show whether the model
    continues the box it started (an induction copy) or draws each coordinate anew.
  * exists: "Is there a <tag> in image?" -> yes / no, half negatives, most sharing colour or shape
    with a listed object (POPE's adversarial negatives; chance 50%).

Options: `--merged-coords` writes each coordinate with its punctuation as one token ("(x1," "y1),"
"(x2," "y2)"), so continuing a box is a one-token induction; `--single-tags` makes each tag one token;
`--tag-first` answers with the object's list entry, "<T>tag</T><Bbox>...", so the box follows the
tag at the same offsets as in the list (scored teacher-forced, so the tag is given).
`--attn-supervision W` adds W x the cross-entropy of one last-layer head's attention against where each
answer token sits in the asked entry's box (the circuit spelled out, with eager attention), and
`--bind-supervision` also shows two first-layer heads the tag's colour and shape at that lookup's key
(the entry's first coordinate) and query; `--rope-theta` sets the RoPE base.

Usage: python bench/lm_lookup.py [--task where|exists] [--steps 1500] [--lr 1e-3] [--max-objects 3]
       [--questions 1] [--merged-coords] [--single-tags] [--tag-first] [--init-std 0.02] [--threads 2] [--layers 2] [--hidden-size 128]
       [--attn-supervision 0] [--bind-supervision] [--rope-theta 1e4]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from lyrics.toyworld.standins.lm import LMStandinConfig

COLOURS = [f"c{i}" for i in range(6)]
SHAPES = [f"s{i}" for i in range(5)]
TAGS = [(c, s) for c in COLOURS for s in SHAPES]
GRID = sorted({min(999, round(i / 224 * 1000)) for i in range(225)})  # int1000 of a 224-pixel grid
WORDS = ["<pad>", "<s>", "<br>", "</br>", "<T>", "</T>", "<Bbox>", "</Box>", "(", ")", ",", "USER:", "Objects:", "\n"]
WORDS += ["Where", "is", "the", "?", "Is", "there", "a", "in", "image", "ASSISTANT:", "yes", "no"]
VOCAB = WORDS + COLOURS + SHAPES + [f"{c}_{s}" for c, s in TAGS] + [str(v) for v in GRID]
VOCAB += [f"({v}," for v in GRID] + [f"{v})," for v in GRID] + [f"{v})" for v in GRID]
INDEX = {word: i for i, word in enumerate(VOCAB)}


class Drills:
    def __init__(self, args, seed: int):
        self.args, self.rng = args, np.random.default_rng(seed)

    def tag(self, t) -> list[str]:
        return [f"{t[0]}_{t[1]}"] if self.args.single_tags else list(t)

    def box(self, b) -> list[str]:
        if self.args.merged_coords:
            return ["<Bbox>", f"({b[0]},", f"{b[1]}),", f"({b[2]},", f"{b[3]})", "</Box>"]
        return ["<Bbox>", "(", str(b[0]), ",", str(b[1]), ")", ",", "(", str(b[2]), ",", str(b[3]), ")", "</Box>"]

    def sample(self, questions: int = 1) -> tuple[list[int], list[int], int, list[tuple[int, int]], list[tuple[int, int, int]]]:
        """(ids, the positions of answer tokens, objects listed, attention sources, binds; see
        `supervise`): one list, then `questions` turns "q ASSISTANT: a" about it (more than one: the
        dense supervision of multi-query recall)."""
        rng = self.rng
        k = int(rng.integers(1, self.args.max_objects + 1))
        listed = [TAGS[j] for j in rng.choice(len(TAGS), k, replace=False)]
        boxes = []
        for _ in listed:
            x, y = np.sort(rng.choice(GRID, 2)), np.sort(rng.choice(GRID, 2))
            boxes.append([int(x[0]), int(y[0]), int(x[1]), int(y[1])])
        words = ["<s>", "USER:", "Objects:"]
        for t, b in zip(listed, boxes):
            words += ["<br>", "<T>", *self.tag(t), "</T>", *self.box(b), "</br>"]
        starts = [i for i, w in enumerate(words) if w == "<br>"]  # each list entry's first position
        answers: list[int] = []
        sources: list[tuple[int, int]] = []
        binds: list[tuple[int, int, int]] = []
        for _ in range(questions):
            question, answer, asked = self.turn(listed, boxes)
            if asked is not None and not self.args.tag_first:
                turn_sources, turn_binds = self.supervise(words, len(words) + len(question), starts[asked])
                sources += turn_sources
                binds += turn_binds
            words += question
            answers += range(len(words), len(words) + len(answer))
            words += answer
        return [INDEX[w] for w in words], answers, k, sources, binds

    def supervise(self, words: list[str], answer_at: int, entry: int) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]]]:
        """Attention targets for a "where" answer starting at `answer_at` about the list entry at `entry`.

        Sources: (answer position, the entry's position of the same box token): one last-layer head
        should attend there to copy it (`--attn-supervision`). Binds: (first-layer head, position, tag
        word): heads 1 and 2 gather the colour and shape at the entry's first coordinate and at the
        answer position that predicts it, i.e. the lookup's key and query (`--bind-supervision`)."""
        box_at = words.index("<Bbox>", entry)
        sources = [(answer_at + j, box_at + j) for j in range(words.index("</Box>", box_at) + 1 - box_at)]
        if self.args.single_tags:
            return sources, []
        first = 1 if self.args.merged_coords else 2  # "<Bbox>" ("(") then the first coordinate
        key, query, asked = box_at + first, answer_at + first - 1, answer_at - 4  # "the" colour shape "?" "ASSISTANT:"
        return sources, [(1, key, entry + 2), (2, key, entry + 3), (1, query, asked), (2, query, asked + 1)]

    def turn(self, listed, boxes) -> tuple[list[str], list[str]]:
        rng = self.rng
        if self.args.task == "where":
            i = int(rng.integers(len(listed)))
            named = ["<T>", *self.tag(listed[i]), "</T>"] if self.args.tag_first else []
            return ["\n", "Where", "is", "the", *self.tag(listed[i]), "?", "ASSISTANT:"], named + self.box(boxes[i]), i
        if rng.random() < 0.5:
            asked, answer = listed[int(rng.integers(len(listed)))], ["yes"]
        else:
            absent = [t for t in TAGS if t not in listed]
            near = [t for t in absent if any(t[0] == u[0] or t[1] == u[1] for u in listed)]
            source = near if near and rng.random() < 0.6 else absent
            asked, answer = source[int(rng.integers(len(source)))], ["no"]
        return ["\n", "Is", "there", "a", *self.tag(asked), "in", "image", "?", "ASSISTANT:"], answer, None

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int, int]], list[tuple[int, int, int, int]]]:
        rows = [self.sample(self.args.questions) for _ in range(n)]
        sources = [(i, p - 1, s) for i, row in enumerate(rows) for p, s in row[3]]  # the position whose output is token p
        binds = [(i, *b) for i, row in enumerate(rows) for b in row[4]]
        length = max(len(row[0]) for row in rows)
        ids, labels = torch.zeros(n, length, dtype=torch.long), torch.full((n, length), -100)
        for i, (row, answers, *_) in enumerate(rows):  # right padding: causal attention never sees it
            ids[i, : len(row)] = torch.tensor(row)
            labels[i, answers] = ids[i, answers]
        return ids, labels, sources, binds


@torch.no_grad()
def score(model, drills: Drills, n: int) -> dict[str, list]:
    """Teacher-forced greedy hits per answer position, by objects listed (1, 2, 3, 4+)."""
    model.eval()
    hits: dict[str, list] = {}
    for _ in range(n):
        ids, answer, k, _, _ = drills.sample()  # one question, as the stage-2 prompt asks
        logits = model(torch.tensor([ids])).logits[0, answer[0] - 1 : -1]
        hits.setdefault(f"{min(k, 4)}{'+' if k >= 4 else ''} listed", []).append(logits.argmax(-1).numpy() == np.array(ids[answer[0] :]))
    model.train()
    return hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["where", "exists"], default="where")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-3, help="the LM stand-in trains at 3e-3")
    parser.add_argument("--max-objects", type=int, default=3)
    parser.add_argument("--merged-coords", action="store_true")
    parser.add_argument("--single-tags", action="store_true")
    parser.add_argument("--tag-first", action="store_true", help="answer '<T>tag</T><Bbox>...', the list entry's own order")
    parser.add_argument("--questions", type=int, default=1, help="training turns about each list (scored on one)")
    parser.add_argument("--init-std", type=float, default=0.02, help="LlamaConfig.initializer_range (the stand-in: 0.02)")
    parser.add_argument("--attn-supervision", type=float, default=0.0, help="weight of a loss showing one last-layer head the source of each answer token")
    parser.add_argument("--bind-supervision", action="store_true", help="also show two first-layer heads the tag words (needs --attn-supervision)")
    parser.add_argument("--rope-theta", type=float, default=10000.0, help="RoPE base (Llama 2: 1e4, Llama 3: 5e5)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=LMStandinConfig.layers)
    parser.add_argument("--hidden-size", type=int, default=LMStandinConfig.hidden_size, help="the MLP is 8/3 as wide")
    args = parser.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    standin = LMStandinConfig()
    config = LlamaConfig(
        vocab_size=len(VOCAB), hidden_size=args.hidden_size, intermediate_size=args.hidden_size * 8 // 3 + 3,
        num_hidden_layers=args.layers, num_attention_heads=standin.heads, num_key_value_heads=standin.heads,
        max_position_embeddings=512, tie_word_embeddings=True, pad_token_id=0, initializer_range=args.init_std,
        rope_theta=args.rope_theta,
    )  # fmt: skip
    config._attn_implementation = "eager" if args.attn_supervision > 0 else "sdpa"  # eager returns attention weights
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=standin.weight_decay)
    warmup = standin.warmup
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))
    )
    train, held_out = Drills(args, seed=0), Drills(args, seed=1)
    start = time.perf_counter()
    for step in range(args.steps):
        ids, labels, sources, binds = train.batch(standin.batch_size)
        out = model(ids, labels=labels, output_attentions=args.attn_supervision > 0)
        loss = out.loss
        if args.attn_supervision > 0 and sources:
            # one head of the last layer is shown where the answer token sits in the asked entry
            attn = out.attentions[-1][:, 0]
            b, q, k = (torch.tensor(c) for c in zip(*sources))
            attn_loss = -(attn[b, q, k] + 1e-6).log().mean()
            if step % 100 == 0:
                print(f"step {step:5d}  answer loss {loss.item():.3f}  attention loss {attn_loss.item():.3f}", flush=True)
            loss = loss + args.attn_supervision * attn_loss
            if args.bind_supervision and binds:
                # two first-layer heads are shown the tag words that the lookup's keys and query need
                b, h, q, k = (torch.tensor(c) for c in zip(*binds))
                bind_loss = -(out.attentions[0][b, h, q, k] + 1e-6).log().mean()
                if step % 100 == 0:
                    print(f"step {step:5d}  bind loss {bind_loss.item():.3f}", flush=True)
                loss = loss + args.attn_supervision * bind_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 500 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  answer loss {loss.item():.3f}  ({time.perf_counter() - start:.0f} s)", flush=True)
    hits = score(model, held_out, 400)
    options = [f"--{name.replace('_', '-')}" for name in ("merged_coords", "single_tags", "tag_first", "bind_supervision") if getattr(args, name)]
    options += [f"--attn-supervision {args.attn_supervision:g}"] * (args.attn_supervision > 0) + [f"--rope-theta {args.rope_theta:g}"] * (args.rope_theta != 1e4)
    print(f"{args.task}, {args.layers} layers of {args.hidden_size}, up to {args.max_objects} objects, {args.questions} questions each, {args.steps} steps of {standin.batch_size}, lr {args.lr:g}, init std {args.init_std:g} {' '.join(options)}")
    for listed in sorted(hits):
        per_token = 100 * np.mean(hits[listed], axis=0)
        whole = 100 * np.mean([h.all() for h in hits[listed]])
        k = int(listed[0])
        if args.task == "where":
            first = (1 if args.merged_coords else 2) + (len(train.tag(TAGS[0])) + 2 if args.tag_first else 0)  # the lookup
            print(f"  {listed:9s} first coordinate {per_token[first]:5.1f}% (a random listed one: {100 / k:.0f}%), whole box {whole:5.1f}%, per token {np.round(per_token).astype(int).tolist()}")
        else:
            print(f"  {listed:9s} {whole:5.1f}% right (chance 50%)")


if __name__ == "__main__":
    main()
