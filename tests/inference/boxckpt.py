"""A tiny checkpoint whose answer holds a box, for tests that must see an answer's box drawn.

The shared tiny checkpoint (`tinyckpt.build_checkpoint`) is random: its answers are gibberish with no
box. This one starts from it and fits the whole LLM (LoRA merged) to answer referential questions
about one picture with `ANSWER`, for several regions and in a first and a second turn, so greedy
decoding writes it for any region the test draws. The tiny word-level tokenizer splits the paper's
`<Bbox>` markup into pieces, so the answer writes the bare box `(x1,y1),(x2,y2)` in the checkpoint's
`int1000` coordinates, spaced into tokens; `answer_boxes` parses it back to pixels. 80 steps in one
thread, about 5 s.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

ANSWER = "the circle ( 120 , 340 ) , ( 560 , 780 )"  # box_norm (0.12, 0.34, 0.56, 0.78)
ANSWER_BOX_NORM = (0.12, 0.34, 0.56, 0.78)


def random_region(rng: random.Random, width: int, height: int) -> tuple[int, int, int, int]:
    x1, y1 = rng.randrange(0, width * 3 // 4), rng.randrange(0, height * 3 // 4)
    return (x1, y1, min(width, x1 + rng.randrange(20, width // 4)), min(height, y1 + rng.randrange(20, height // 4)))


def dialogues(pipe, image, question: str, seed: int = 0) -> list[list[dict[str, str]]]:
    """Training dialogues as the pipeline renders them: one- and two-turn, each turn about a random
    region of `image`, every answer `ANSWER`."""
    from lyrics.inference.pipeline import ChatRequest

    rng = random.Random(seed)
    record = pipe.refine([image])[0]
    out = []
    for turns in (1, 1, 1, 1, 2, 2):
        history: list[dict[str, str]] = []
        for _ in range(turns):
            request = ChatRequest(image, question, history=history, regions=[random_region(rng, *image.size)])
            history = pipe.conversation(request, record) + [{"from": "gpt", "value": ANSWER}]
        out.append(history)
    return out


def train_box_answer(checkpoint: str | Path, dest: str | Path, image, question: str, steps: int = 80, seed: int = 0) -> Path:
    """Fit a copy of `checkpoint` to answer `question` about a region of `image` with `ANSWER`;
    write it to `dest` (a standalone merged checkpoint) and return `dest`."""
    from lyrics.inference.pipeline import LyricsPipeline

    torch.manual_seed(seed)
    pipe = LyricsPipeline.from_pretrained(checkpoint)
    convs = dialogues(pipe, image, question, seed)
    proc, model = pipe.processor, pipe.model
    record = pipe.refine([image])[0]
    spatial = record.spatial_text if proc.config.spatial_text_in_prompt else None
    batch = proc.training_batch(convs, [spatial] * len(convs))
    instructions = [proc.instructions(c)[0] for c in convs]
    visual = proc.visual_inputs(images=[image] * len(convs), records=[record] * len(convs), instructions=instructions)
    model.llm.requires_grad_(True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: a second thread only waits, and on a busy machine 15x slower
    try:
        with torch.enable_grad():
            for _ in range(steps):
                loss = model(**batch, **visual).loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_merged(dest, processor=proc)
    return Path(dest)
