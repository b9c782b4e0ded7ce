"""vLLM serving a merged Lyrics model (the `lyrics.serving_vllm` plugin) answers as `lyrics serve` does.

The same OpenAI chat requests (images as data URLs) go to vLLM's offline `LLM.chat` (the renderer
`vllm serve` uses), run in vLLM's own environment (`.venv-vllm`, `make vllm`) in a subprocess, and to
`lyrics serve`'s request path (`build_request` -> `LyricsPipeline`) here (`chats.py`). Greedy decoding
must give the same prompt token ids (the plugin's chat renderer, `<image>` expansion, the refiner's
spatial text) and the same answers. The checkpoint served by default has a LLaMA SentencePiece
tokenizer in Vicuna's format (the paper's LLM), which tokenises pieces of text otherwise together
than apart (SmolLM2's tokenizer, ChatML: `test_vllm_lora.py`). Questions: POPE-style yes/no, VQA, REC, captions on toy-world pictures, a
multi-turn dialogue and a text-only one; `LYRICS_VLLM_QUESTIONS` sets how many image questions
(default 50), `LYRICS_VLLM_CHECKPOINT` serves another merged folder instead of the tiny one (e.g.
the quickstart's, `lyrics merge runs/quickstart/stage2/final --out runs/quickstart/merged`), and
`LYRICS_VLLM_WORLD` (e.g. `runs/quickstart/world`) asks that world's test-split captioning, VQA,
REC and POPE questions in the eval's own prompts instead of the drawn scenes.
The stage-2 folder with its adapter, through vLLM's LoRA: `test_vllm_lora.py`.
Regions (`lyrics serve`'s `regions` / `region_format`; on vLLM in `mm_processor_kwargs`,
`lyrics.serving_vllm.regions`): referential questions with and without `<region>`, in pixels, 0-1
and 0-1000, give the same prompt ids and answers on the same engine, and bad boxes are refused
with `lyrics serve`'s message and `param`. Over HTTP: `test_regions.py`.

Skips, with the reason, where `.venv-vllm` is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serving_vllm.chats import (
    BAD_REGIONS,
    NO_VLLM,
    REGION_CHATS,
    VLLM_PYTHON,
    conversations,
    differences,
    lyrics_serve_answers,
    region_spec,
    run_vllm,
    world_conversations,
)

pytestmark = pytest.mark.skipif(not VLLM_PYTHON.is_file(), reason=NO_VLLM)


@pytest.fixture(scope="module")
def served(request, tmp_path_factory):
    """(merged folder, stage-2 folder or None, conversations, vLLM's output)."""
    folder = os.environ.get("LYRICS_VLLM_CHECKPOINT")
    stage2 = None
    if not folder:  # the harder tokenizer: SentencePiece, Vicuna's format (SmolLM2's: test_vllm_lora.py)
        stage2, folder = request.getfixturevalue("tiny_sentencepiece_checkpoints")
    count = int(os.environ.get("LYRICS_VLLM_QUESTIONS", "50"))
    world = os.environ.get("LYRICS_VLLM_WORLD")
    convs = conversations(count, world_conversations(Path(world), count) if world else None)
    spec = {
        "folder": str(folder), "conversations": convs, "refuse": str(stage2) if stage2 else None, "refuse_mode": str(folder),
        "region_chats": region_spec(REGION_CHATS), "bad_regions": region_spec(BAD_REGIONS),
    }  # fmt: skip
    return Path(folder), stage2, convs, run_vllm(tmp_path_factory.mktemp("vllm"), spec)


@pytest.fixture(scope="module")
def pipe(served):
    """`lyrics serve`'s pipeline on the served folder."""
    from lyrics.inference import LyricsPipeline

    return LyricsPipeline.from_pretrained(served[0])


@pytest.fixture(scope="module")
def lyrics_answers(served, pipe):
    """`lyrics serve`'s answers: each request through its `build_request`, then the pipeline."""
    folder, _, convs, _ = served
    return lyrics_serve_answers(folder, convs, pipe=pipe)


def test_prompts_are_the_same_token_ids(served, lyrics_answers):
    _, _, convs, out = served
    for i, ((ids, _), theirs) in enumerate(zip(lyrics_answers, out["answers"])):
        assert theirs["prompt_token_ids"] == ids, f"conversation {i}: {convs[i]}"
    # the image questions expand <image> and (trained with spatial text) carry the refiner's objects
    assert all(len(ids) > 20 for ids, _ in lyrics_answers[:-1])


def test_greedy_answers_are_the_same(served, lyrics_answers):
    _, stage2, _, out = served
    differ = differences(lyrics_answers, out["answers"])
    assert not differ, f"{len(differ)} of {len(lyrics_answers)} answers differ: {differ[:5]}"
    if stage2 is not None:  # the tiny random model: its answers depend on the image and the question
        ours = [result.text for _, result in lyrics_answers]
        assert len(set(ours)) > len(ours) // 3
    counts = [(result.completion_tokens, result.finish_reason) for _, result in lyrics_answers]
    assert counts == [(len(a["token_ids"]), a["finish_reason"]) for a in out["answers"]]


def test_a_stage2_folder_given_to_vllm_directly_is_refused_naming_what_to_run(served):
    _, stage2, _, out = served
    if stage2 is None:
        pytest.skip("LYRICS_VLLM_CHECKPOINT is set: no stage-2 folder to refuse")
    assert out["refusal"] and "NotAMergedLyricsModel" in out["refusal"]
    assert "adapter/" in out["refusal"] and f"python -m lyrics.serving_vllm serve {stage2}" in out["refusal"]
    assert f"lyrics merge {stage2}" in out["refusal"]


def test_a_folder_loaded_without_the_plugins_renderer_is_refused_naming_the_flag(served):
    """vLLM's own renderer would tokenise the chat template's text whole, not by the processor's rules."""
    folder, _, _, out = served
    assert out["mode_refusal"] and f"{folder}: a Lyrics model is served with --tokenizer-mode lyrics (got 'hf')" in out["mode_refusal"]
    assert "python -m lyrics.serving_vllm serve FOLDER" in out["mode_refusal"]


def test_regions_give_the_same_prompt_ids_and_answers(served, pipe):
    """`lyrics serve`'s body fields `regions` / `region_format` and vLLM's `mm_processor_kwargs` with
    the same values: the same prompt ids (the boxes rendered in the last user turn) and answers."""
    from lyrics.inference.regions import region_text

    folder, _, _, out = served
    ours = lyrics_serve_answers(folder, [conv for conv, _ in REGION_CHATS], [extra for _, extra in REGION_CHATS], pipe=pipe)
    theirs = out["region_answers"]
    assert len(theirs) == len(REGION_CHATS)
    for i, ((ids, result), answer) in enumerate(zip(ours, theirs)):
        assert ids is not None, f"region chat {i}: lyrics serve refused it: {result}"
        extra = REGION_CHATS[i][1]
        marker = "USER:" if pipe.processor.config.template.kind == "vicuna" else "user"
        question = pipe.processor.decode(ids).rsplit(marker, 1)[-1]  # the last user turn
        fmt = extra.get("region_format", "pixels")
        marks = [region_text(box, 96, 96, pipe.coordinate_format, None, pipe.spatial_style, fmt) for box in extra["regions"]]
        assert "<region>" not in question and all(mark in question for mark in marks), (question, marks)
        assert answer["prompt_token_ids"] == ids, f"region chat {i}: {REGION_CHATS[i]}"
        assert answer["text"].strip() == result.text, f"region chat {i}"
        assert (len(answer["token_ids"]), answer["finish_reason"]) == (result.completion_tokens, result.finish_reason)


def test_bad_regions_are_refused_with_lyrics_serves_message(served, pipe):
    """A box outside the image, one without area, more boxes than placeholders: `lyrics serve`'s
    `InputError` (its 400, `param: regions`) and vLLM's `VLLMValidationError` (vLLM's 400 with that
    `param`) say the same."""
    folder, _, _, out = served
    ours = lyrics_serve_answers(folder, [conv for conv, _ in BAD_REGIONS], [extra for _, extra in BAD_REGIONS], pipe=pipe)
    assert len(out["region_refusals"]) == len(BAD_REGIONS)
    for i, ((ids, error), refusal) in enumerate(zip(ours, out["region_refusals"])):
        assert ids is None and error.param == "regions", f"bad region {i}: lyrics serve answered"
        assert refusal is not None, f"bad region {i}: vLLM answered {BAD_REGIONS[i]}"
        assert (refusal["type"], refusal["parameter"], refusal["message"]) == ("VLLMValidationError", "regions", error.message)
