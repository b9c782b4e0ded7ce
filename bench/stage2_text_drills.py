"""Does text-only reading in the stage-2 mixture keep the LM stand-in's reading of existence?

Trains the quickstart's world, stand-ins (with the multi-question LM of docs/toy-model.md: packed,
isolated 384-token blocks of 8, 8 questions per drill, init std 0.1, 1600 steps) and stage 1 into
RUN once, then stage 2 again into RUN/var/text=W with text-only reading drills (two per
train image, "Objects: <list>" + one question, written as an Alpaca file and converted by the real
`alpaca` converter) added to the mixture at weight W, and prints the test split's colour VQA,
existence VQA, REC and POPE next to the run without them (RUN/results.json). Measured numbers are in
docs/toy-model.md; a run takes about 10 minutes for RUN and 4 per weight on 2 cores.

Usage: python bench/stage2_text_drills.py RUN [--weight 0.15 ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lyrics.toyworld import quickstart as Q
from lyrics.toyworld.standins.lm import LMStandinConfig

LM = LMStandinConfig(pack_drills=True, isolate_documents=True, block_size=384, batch_size=8, drill_questions=8, initializer_range=0.1, steps=1600)
SHOWN = ("vqa/color", "vqa/existence", "rec/Acc@0.5", "pope_random/accuracy", "pope_random/F1", "pope_adversarial/F1")


def drill_records(run: Path) -> None:
    """Alpaca-layout reading drills of the train split, converted into RUN/records/reading_drills.json."""
    from lyrics.data.convert import convert
    from lyrics.data.records import save_records
    from lyrics.toyworld.annotate import split_tag_pool
    from lyrics.toyworld.standins.corpus import load_split, reading_drill

    rng, pool, rows = np.random.default_rng(0), split_tag_pool("train"), []
    for img in load_split(run / "world", "train"):
        for _ in range(2):
            _, (objects, _), (question, _), (answer, _) = reading_drill(img, rng, pool)
            rows.append({"instruction": "Objects: " + objects, "input": question.strip().removesuffix(" ASSISTANT:"), "output": answer.strip()})
    path = run / "world" / "alpaca" / "reading_drills.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(rows))
    save_records(convert("alpaca", [path]).records, run / "records" / "reading_drills.json")


def show(name: str, results: dict) -> None:
    print(f"{name:14s}", "  ".join(f"{k} {results[f'test/{k}']['value']:.1f}" for k in SHOWN), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--weight", type=float, nargs="+", default=[0.15])
    args = parser.parse_args()
    from lyrics.toyworld.results import evaluate_quickstart

    base = Q.Quickstart(args.run, Q.DEFAULT, lm=LM).run()
    drill_records(args.run)
    show("no drills", base.results)
    for weight in args.weight:
        mixture = {**Q.MIXTURE, "reading_drills": ("alpaca", [], None, weight)}  # records made by drill_records
        run = Q.Quickstart(args.run / "var" / f"text={weight:g}", Q.DEFAULT, shared=args.run, lm=LM, mixture=mixture)
        run.prepare()
        checkpoint = run.stage_stage2(args.run / "stage1" / "final")
        show(f"drills {weight:g}", evaluate_quickstart(run, checkpoint, splits=("test",)))


if __name__ == "__main__":  # the refine stage spawns processes that re-import this file
    main()
