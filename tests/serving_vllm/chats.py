"""What the vLLM tests send and how they get both sides' answers: OpenAI chat requests (images as
data URLs) run through vLLM's `LLM.chat` in vLLM's environment (`vllm_chat.py`, a subprocess), and
through `lyrics serve`'s request path (`build_request` -> `LyricsPipeline`) here."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from itertools import zip_longest
from pathlib import Path

from inference.tinyckpt import scene

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
NO_VLLM = f"{VLLM_PYTHON} is absent: `make vllm` builds vLLM's environment"
SCRIPT = Path(__file__).with_name("vllm_chat.py")
MAX_TOKENS = 24
QUESTIONS = [
    "Is there a red circle in the image?",
    "What color is the square?",
    "How many objects are there?",
    "Where is the blue square? Answer with its box.",
    "Write a short description for the image.",
    "Is there a green star in the image?",
    "What shape is the yellow object?",
    "What is left of the circle?",
]


def data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def user(text: str, image=None) -> dict:
    if image is None:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(image)}}, {"type": "text", "text": text}]}


def conversations(count: int, questions: list[list[dict]] | None = None) -> list[list[dict]]:
    """`count` image questions (or `questions`), then a multi-turn dialogue, a system prompt and a
    text-only chat."""
    convs = questions or [[user(QUESTIONS[i % len(QUESTIONS)], scene(i))] for i in range(count)]
    convs.append([user("What color is the circle?", scene(1)), {"role": "assistant", "content": "red"}, user("And the square?")])
    convs.append([{"role": "system", "content": "Answer in one word."}, user("Is there a blue square?", scene(4))])
    convs.append([user("Name three colours.")])
    return convs


# The quickstart's test benchmarks (`lyrics.toyworld.results`): the eval's own prompts, as
# `lyrics eval --endpoint` sends them (`lyrics.eval.endpoint.to_messages`).
WORLD_BENCHMARKS = (
    ("coco-captions", "", "toytest", "images"),
    ("vqav2", "vqav2", "toytest", "images"),
    ("refcoco", "", "test", "images"),
    ("pope", "pope/test", "random", "images/toytest"),
    ("pope", "pope/test", "adversarial", "images/toytest"),
)


def world_conversations(world: Path, count: int) -> list[list[dict]]:
    """`count` distinct test-split questions of a toy world (a quickstart's `world/`), taken in turn
    from its captioning, VQA, REC and POPE (random, adversarial) splits, each as the eval prompts it."""
    from lyrics.eval.benchmarks import get_benchmark, load_samples
    from lyrics.eval.endpoint import to_messages
    from lyrics.eval.fewshot import build_turns
    from lyrics.eval.predictor import Prompt
    from lyrics.eval.runner import choose_template

    queues = []
    for name, data, split, images in WORLD_BENCHMARKS:
        spec = get_benchmark(name)
        samples = load_samples(spec, world / data, split, world / images)
        template = choose_template(spec, None, samples[0])
        queues.append([Prompt(build_turns(spec, template, s), [s.image]) for s in samples])
    prompts, seen = [], set()
    for prompt in (p for row in zip_longest(*queues) for p in row if p is not None):
        key = (str(prompt.images[0]), prompt.turns[-1]["value"])
        if key not in seen:  # POPE's samplings share some questions
            seen.add(key)
            prompts.append(prompt)
    return [to_messages(p) for p in prompts[:count]]


# Referential questions: `lyrics serve`'s `regions` / `region_format` request fields, which vLLM takes
# in `mm_processor_kwargs` (`lyrics.serving_vllm.regions`). The scenes are 96 x 96 pixels.
REGION_CHATS = [
    ([user("What is the object <region>?", scene(1))], {"regions": [[8, 8, 40, 40]]}),
    ([user("What colour are these objects?", scene(2))], {"regions": [[10, 20, 50, 60], [40, 8, 90, 70]]}),
    ([user("Is the object <region> left of the object <region>?", scene(3))], {"regions": [[100, 100, 500, 500], [400, 300, 990, 800]], "region_format": "0-1000"}),
    ([user("What is in the image?", scene(4)), {"role": "assistant", "content": "a circle"}, user("And what is this?")],
     {"regions": [[0.1, 0.25, 0.5, 0.75]], "region_format": "0-1"}),
]  # fmt: skip
BAD_REGIONS = [
    ([user("What is the object <region>?", scene(1))], {"regions": [[0, 0, 200, 50]]}),  # outside the image
    ([user("What is the object <region>?", scene(1))], {"regions": [[10, 10, 10, 40]]}),  # no area
    ([user("What is the object <region>?", scene(2))], {"regions": [[8, 8, 40, 40], [50, 50, 90, 90]]}),  # more boxes than placeholders
]


def region_spec(chats) -> list[dict]:
    """`vllm_chat.py`'s region chats: each request's regions as its `mm_processor_kwargs`."""
    return [{"messages": conv, "mm_processor_kwargs": extra} for conv, extra in chats]


def run_vllm(root: Path, spec: dict) -> dict:
    """`vllm_chat.py` on `spec` in vLLM's environment; its output (answers, timings)."""
    (root / "spec.json").write_text(json.dumps({"max_tokens": MAX_TOKENS, **spec}))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": ""}
    run = subprocess.run(
        [str(VLLM_PYTHON), str(SCRIPT), str(root / "spec.json"), str(root / "out.json")],
        cwd=root, env=env, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    out = json.loads((root / "out.json").read_text())
    regions = f", {len(out['region_answers']) + len(out['region_refusals'])} region chats in {out['regions_s']:.2f} s" if "regions_s" in out else ""
    print(f"vLLM: startup {out['startup_s']:.1f} s, {len(spec['conversations'])} chats in {out['generate_s']:.2f} s{regions}", file=sys.stderr)
    return out


def lyrics_serve_answers(folder: Path, convs: list[list[dict]], extras: list[dict] | None = None, pipe=None) -> list[tuple[list[int], object]]:
    """`lyrics serve`'s (prompt ids, result) per conversation: its `build_request`, then the pipeline
    (which loads a stage-2 folder with its adapter, or a merged one). `extras`: more request fields
    per conversation (`regions`, `region_format`). A refused request gives (None, its `InputError`)."""
    from lyrics.inference import LyricsPipeline
    from lyrics.inference.inputs import InputError
    from lyrics.inference.limits import ServerLimits
    from lyrics.inference.schemas import ChatCompletionRequest
    from lyrics.inference.server import build_request

    pipe = pipe or LyricsPipeline.from_pretrained(folder)
    answers = []
    for conv, extra in zip(convs, extras or [{}] * len(convs)):
        body = ChatCompletionRequest(model="lyrics", messages=conv, max_tokens=MAX_TOKENS, temperature=0, **extra)
        request = build_request(body, ServerLimits(), pipe, 0.0)
        (prepared,) = pipe.prepare([request])
        if isinstance(prepared, InputError):
            answers.append((None, prepared))
            continue
        (result,) = pipe.run([request])
        answers.append((prepared.input_ids, result))
    return answers


def differences(lyrics_answers, vllm_answers: list[dict]) -> list[tuple[int, str, str]]:
    """(index, `lyrics serve`'s text, vLLM's) where the greedy answers differ; vLLM keeps the
    whitespace `lyrics serve` strips."""
    ours = [result.text for _, result in lyrics_answers]
    theirs = [a["text"].strip() for a in vllm_answers]
    return [(i, a, b) for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
