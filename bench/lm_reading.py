"""How well the LM stand-in reads an object list: the ceiling of the toy quickstart (docs/toy-model.md).

Trains the LM stand-in (`lyrics.toyworld.standins.lm`) on a generated default-size toy world, then
asks it reading drills about val-split object lists (`corpus.reading_drill`, never seen in training)
and scores its greedy answers per question kind:

  * colour: "What color is the <shape>?" for a shape that occurs once in the list (chance: 1/6);
  * exist-yes / exist-no: "Is there a <tag> in the image?" for a listed / an unlisted tag;
  * where: "Where is the <tag>?", right when the first box of the answer has IoU >= 0.5 with the
    listed one; also by the number of listed objects, since with one the box is copied without any
    lookup (the default stand-in: 88% right with one, 33% with two, under 10% with three or more on
    test lists, which is why its REC stays near zero).

The variants docs/toy-model.md reports: `--layers 3`; `--tag-tokens` (every tag one token of the LM's
vocabulary); `--only existence --drills-per-image 30` (fresh existence drills only; `--only where` likewise);
`--pack` and `--pack --isolate`, with `--drills-per-image 8` (`LMStandinConfig.pack_drills`);
`--min-objects 2` (no drill lists one object alone); `--question-first`; `--random-lists 40000`
(extra drills about random lists that never repeat); `--steps 6000`; with `--pack --isolate --block-size 384
--drill-questions 8 --init-std 0.1 --steps 1600 --pope 200`: `--layers 4`, `--min-objects 8`, `--conjunction 0.5`;
and at `--steps 1800 --min-objects 8`: `--kinds 1 4 1` and `--kinds 1 8 1` (how often each question is asked),
`--prefix 0.5` (half the drills with a caption before the list); with `--kinds 1 4 1`: `--steps 3600`,
`--init-std 0.2`, `--steps 3600 --batch-size 4` (the same tokens in smaller steps) and
`--block-size 512 --drill-questions 16`.
`--pope N` also answers N test POPE questions per sampling from ground-truth lists
(`bench/pope_reading.py`'s `lm alone`), split by what the absent object shares with the list.

Usage: python bench/lm_reading.py [--world /tmp/lm_reading_world] [--steps 2000] [--layers 2]
       [--drills-per-image 4] [--only existence|where] [--repeat 1] [--tag-tokens] [--questions 6]
       [--pack [--isolate]] [--min-objects 1] [--question-first] [--random-lists 0]
       [--drill-questions 1] [--init-std 0.02] [--block-size 256] [--conjunction 0]
       [--kinds COLOUR EXISTENCE BOX] [--prefix 0] [--batch-size N] [--lr 3e-3] [--pope 0]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from lyrics.refiner.spatial import box_iou, parse_first_box
from lyrics.toyworld import spec
from lyrics.toyworld.annotate import split_tag_pool
from lyrics.toyworld.standins.corpus import StandinData, document_text, lm_documents, reading_drill
from lyrics.toyworld.standins.lm import LMStandinConfig, fit_lm
from lyrics.toyworld.standins.training import seed_everything
from lyrics.toyworld.standins.vocab import train_lm_tokenizer
from lyrics.toyworld.world import WorldSizes, generate_world


# What a drill of each `--only` kind asks.
ASKS = {"existence": "Is there", "where": "Where is"}


def random_list_drills(images, count: int, args) -> list:
    """Drills about object lists drawn at random (train-pool tags, boxes on the 224-pixel grid), so
    that no list repeats and a box cannot be memorised with its image."""
    rng, pool = np.random.default_rng(7), split_tag_pool("train")
    drills = []
    while len(drills) < count:
        n = int(rng.integers(1, 9))
        objects = []
        for tag in rng.choice(pool, size=n, replace=False):
            x, y = np.sort(rng.integers(0, 225, size=2)), np.sort(rng.integers(0, 225, size=2))
            if x[1] - x[0] >= 8 and y[1] - y[0] >= 8:
                objects.append((str(tag), (x[0] / 224, y[0] / 224, x[1] / 224, y[1] / 224)))
        if not objects:
            continue
        drill = reading_drill(replace(images[0], objects=objects), rng, pool, min_objects=args.min_objects, question_first=args.question_first)
        if not args.only or ASKS[args.only] in document_text(drill):
            drills.append(drill)
    return drills


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=Path("/tmp/lm_reading_world"))
    parser.add_argument("--steps", type=int, default=LMStandinConfig.steps)
    parser.add_argument("--layers", type=int, default=LMStandinConfig.layers)
    parser.add_argument("--drills-per-image", type=int, default=LMStandinConfig.drills_per_image)
    parser.add_argument("--only", choices=["existence", "where"], help="train on drills of this kind only")
    parser.add_argument("--repeat", type=int, default=1, help="copies of each training document")
    parser.add_argument("--tag-tokens", action="store_true", help="add every tag to the LM vocabulary as one token")
    parser.add_argument("--questions", type=int, default=6, help="drills asked per val image")
    parser.add_argument("--pack", action="store_true", help="pack_drills: every drill whole in one 256-token block (batch 12)")
    parser.add_argument("--isolate", action="store_true", help="with --pack: each document attends to itself only")
    parser.add_argument("--question-first", action="store_true", help="drills ask before listing: 'USER: q\\nObjects: <list> ASSISTANT:'")
    parser.add_argument("--random-lists", type=int, default=0, help="add this many drills about fresh random object lists (no image)")
    parser.add_argument("--min-objects", type=int, default=1, help="training drills list at least this many objects")
    parser.add_argument("--drill-questions", type=int, default=1, help="questions per training drill (LMStandinConfig.drill_questions)")
    parser.add_argument("--init-std", type=float, default=LMStandinConfig.initializer_range, help="LMStandinConfig.initializer_range")
    parser.add_argument("--block-size", type=int, default=256, help="with --pack: block length (batch: 3072 tokens / block)")
    parser.add_argument("--conjunction", type=float, default=0.0, help="share of 'no' drills asking a conjunction foil (colour and shape listed apart)")
    parser.add_argument("--kinds", type=float, nargs=3, help="weights of the drills' colour, existence and box questions (default: equal)")
    parser.add_argument("--prefix", type=float, default=0.0, help="share of drills with a caption before the list")
    parser.add_argument("--batch-size", type=int, help="blocks per step (default: 3072 tokens / block with --pack, else the config's)")
    parser.add_argument("--lr", type=float, default=LMStandinConfig.lr, help="LMStandinConfig.lr")
    parser.add_argument("--pope", type=int, default=0, help="also answer this many test POPE questions per sampling (bench/pope_reading.py)")
    args = parser.parse_args()

    if not (args.world / "world.json").is_file():
        generate_world(args.world, seed=0, sizes=WorldSizes(train=1200, val=60, test=200, zeroshot=120))
    data = StandinData.load(args.world)
    config = LMStandinConfig(
        steps=args.steps, layers=args.layers, drills_per_image=args.drills_per_image, pack_drills=args.pack, isolate_documents=args.isolate,
        drill_questions=args.drill_questions, initializer_range=args.init_std, lr=args.lr,
    )  # fmt: skip
    if args.pack:
        config = replace(config, block_size=args.block_size, batch_size=3072 // args.block_size)
    if args.batch_size:
        config = replace(config, batch_size=args.batch_size)
    generator = seed_everything(config.seed)
    documents = lm_documents(
        data.train, np.random.default_rng(config.seed), drills_per_image=config.drills_per_image, drill_min_objects=args.min_objects,
        question_first=args.question_first, drill_questions=args.drill_questions, drill_conjunction=args.conjunction,
        drill_kinds=tuple(args.kinds) if args.kinds else None, drill_prefix=args.prefix,
    )  # fmt: skip
    if args.only:
        documents = [d for d in documents if len(d) > 1 and ASKS[args.only] in document_text(d)]
    if args.random_lists:
        documents += random_list_drills(data.train, args.random_lists, args)
        documents = [documents[k] for k in np.random.default_rng(1).permutation(len(documents))]
    documents = documents * args.repeat
    tokenizer = train_lm_tokenizer(map(document_text, documents), vocab_size=config.tokenizer_vocab_size)
    if args.tag_tokens:
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(tag, lstrip=True, single_word=True) for tag in spec.all_tags()])
    start = time.perf_counter()
    model, log = fit_lm(config, tokenizer, documents, generator)
    seconds = time.perf_counter() - start

    model.eval()
    rng, pool = np.random.default_rng(123), split_tag_pool("train")
    right: dict[str, list[bool]] = {}
    for image in data.val:
        for _ in range(args.questions):
            drill = reading_drill(image, rng, pool, question_first=args.question_first)
            prompt, answer = "".join(text for text, _ in drill[:3]), drill[3][0].strip()
            kind = "colour" if "color" in prompt else "where" if "Where" in prompt else f"exist-{answer}"
            listed = drill[1][0].count("<br>")
            encoded = tokenizer(prompt, return_tensors="pt")
            with torch.no_grad():
                out = model.generate(**encoded, max_new_tokens=20, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            said = tokenizer.decode(out[0, encoded.input_ids.shape[1] :], skip_special_tokens=True).strip()
            if kind == "where":
                # the parser that scores REC (`lyrics.eval`), on the answer and on the listed box
                got, truth = parse_first_box(said), parse_first_box(answer)
                ok = got is not None and box_iou(got, truth) >= 0.5
            else:
                ok = said == answer
            right.setdefault(kind, []).append(ok)
            if kind == "where":  # one listed object needs no lookup: the copy alone answers it
                right.setdefault("where, 1 listed" if listed == 1 else "where, 2-3 listed" if listed < 4 else "where, 4+ listed", []).append(ok)
    print(
        f"LM stand-in, {config.layers} layers, {config.steps} steps ({seconds:.0f} s), {len(documents)} training documents"
        f"{f', {args.only} drills only' if args.only else ''}{', tags as tokens' if args.tag_tokens else ''}; "
        f"final train loss {log.final_loss:.3f}"
    )
    for kind in sorted(right):
        print(f"  {kind:10s} {100 * np.mean(right[kind]):5.1f}% right of {len(right[kind])}")
    if args.pope:
        from pope_reading import lm_answers, pope_rows

        for sampling in ("random", "adversarial"):
            rows, images = pope_rows(args.world, sampling, args.pope)
            said = lm_answers(tokenizer, model, rows, images)
            right_pope = np.mean([s == r["label"] for s, r in zip(said, rows)])
            print(f"  POPE {sampling:11s} {100 * right_pope:5.1f}% right of {len(rows)} (ground-truth lists; 'yes' {said.count('yes')})")
            # Which absent objects fool it: a foil whose colour and shape are both listed (on different
            # objects) needs them bound; one sharing one or neither does not.
            kinds: dict[str, list[bool]] = {}
            for s, r in zip(said, rows):
                tags = [o["tag"].split() for o in images[r["image"]]["objects"]]
                colour, shape = r["text"].split()[3:5]  # "Is there a(n) <colour> <shape> in the image?"
                if r["label"] == "yes":
                    kind = f"yes, {min(len(tags), 6)}{'+' if len(tags) >= 6 else ''} listed"
                else:
                    shared = (any(t[0] == colour for t in tags), any(t[-1] == shape for t in tags))
                    kind = {(True, True): "no, colour and shape listed", (False, False): "no, neither listed"}.get(shared, "no, one listed")
                kinds.setdefault(kind, []).append(s == r["label"])
            for kind in sorted(kinds):
                print(f"    {kind:28s} {100 * np.mean(kinds[kind]):5.1f}% right of {len(kinds[kind])}")


if __name__ == "__main__":
    main()
