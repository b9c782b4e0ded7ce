"""Where does a quickstart run lose POPE? The LM stand-in alone, the stage-2 model, and the stage-2
model without its LoRA, on the same POPE questions.

POPE asks "Is there a <tag> in the image?" (Table 10's VQA template 0). Each row reads the run's
test-split POPE file and prints the answers given and the accuracy (chance 50%):

  * `lm alone`: the LM stand-in, prompted as its reading drills are, "USER: Objects: <list>\\n<q>
    ASSISTANT:", the list written from the image's ground truth; yes vs no by the next-token logits;
  * `stage 2`: the stage-2 checkpoint through `LyricsPipeline` (live refiner, greedy);
  * `stage 2 w/o LoRA`: the same pipeline after the LM's weights are reset to the stand-in's own
    (`LyricsPipeline` merges the adapter into them at load), i.e. the stage-2 prompt, image tokens
    and projection, but the LM as pretrained.

When `lm alone` and `w/o LoRA` read above chance and `stage 2` does not, stage 2's LoRA overrode a
reading the LM had (docs/toy-model.md).

Usage: python bench/pope_reading.py RUN_DIR [--sampling adversarial] [--limit 80] [--lm-prefix TEXT ...]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch


def report(name: str, said: list[str], labels: list[str]) -> None:
    right = sum(s == y for s, y in zip(said, labels))
    print(f"  {name:18s} {dict(Counter(said))}  accuracy {100 * right / len(labels):.1f}%")


def lm_answers(tokenizer, lm, rows: list[dict], images: dict[str, dict], prefix: str = "") -> list[str]:
    """The LM alone on POPE `rows`: each image's ground-truth list in a reading drill's prompt (with
    `prefix` between "USER: " and the list), "yes" or "no" by the larger next-token logit."""
    from lyrics.refiner.spatial import format_spatial

    yes, no = tokenizer.convert_tokens_to_ids("Ġyes"), tokenizer.convert_tokens_to_ids("Ġno")
    said = []
    for r in rows:
        listed = format_spatial((o["tag"], o["box_norm"]) for o in images[r["image"]]["objects"])
        ids = tokenizer(f"USER: {prefix}Objects: {listed}\n{r['text']} ASSISTANT:", return_tensors="pt").input_ids
        with torch.no_grad():
            logits = lm(ids).logits[0, -1]
        said.append("yes" if logits[yes] > logits[no] else "no")
    return said


def pope_rows(world: Path, sampling: str, limit: int) -> tuple[list[dict], dict[str, dict]]:
    """The first `limit` test-split POPE questions of a toy world, and its images by file name."""
    rows = [json.loads(line) for line in open(world / f"pope/test/coco_pope_{sampling}.json")][:limit]
    images = {Path(im["file_name"]).name: im for im in json.loads((world / "world.json").read_text())["images"]}
    return rows, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a `lyrics quickstart --out` folder")
    parser.add_argument("--sampling", choices=["random", "popular", "adversarial"], default="adversarial")
    parser.add_argument("--limit", type=int, default=80)
    parser.add_argument("--lm-prefix", action="append", default=[], help="also ask the LM alone with this text before the list (repeatable)")
    args = parser.parse_args()
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lyrics.inference.pipeline import LyricsPipeline

    run = args.run
    rows, images = pope_rows(run / "world", args.sampling, args.limit)
    labels = [r["label"] for r in rows]
    print(f"{run}: {len(rows)} POPE {args.sampling} questions (test split)")

    lm_dir = run / "standins/lm"
    tokenizer, lm = AutoTokenizer.from_pretrained(lm_dir), AutoModelForCausalLM.from_pretrained(lm_dir).eval()
    said = lm_answers(tokenizer, lm, rows, images)
    report("lm alone", said, labels)
    for prefix in args.lm_prefix:  # stage 2 puts the image's tokens there: does other text there hurt the reading?
        report(f"lm, {prefix[:12]!r}", lm_answers(tokenizer, lm, rows, images, prefix.replace("\\n", "\n")), labels)

    pipe = LyricsPipeline.from_pretrained(run / "stage2/final")
    paths = [run / "world/images/toytest" / r["image"] for r in rows]
    prompts = [r["text"] for r in rows]

    def answers() -> list[str]:
        out = pipe(paths, prompts, max_new_tokens=3)
        return [(o.text.strip().lower().split() or [""])[0] for o in out]

    report("stage 2", answers(), labels)
    language_model = pipe.model.language_model
    own = load_file(lm_dir / "model.safetensors")
    current = language_model.state_dict()
    unexpected = [k for k in own if k not in current or current[k].shape != own[k].shape]
    if unexpected:
        raise SystemExit(f"the stage-2 LM does not have the stand-in's weights {unexpected[:3]}: not the same LM")
    language_model.load_state_dict(own, strict=False)  # lm_head is tied to the embeddings
    report("stage 2 w/o LoRA", answers(), labels)


if __name__ == "__main__":
    main()
