"""The one generation layer (`lyrics.inference.generation`): eval's predictor and the pipeline answer
through it, so the same batch gives the same answers on both paths."""

import copy
import dataclasses

import pytest

from lyrics.eval.predictor import LyricsPredictor, Prompt
from lyrics.inference.generation import GenerationSettings, Generator, Row, parse_dtype

QUESTIONS = ["what color is the circle?", "how many objects are there?", "is there a red square?", "describe the image."]


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return LyricsPredictor.from_pretrained(checkpoint)


@pytest.mark.parametrize("spatial", [False, True])
def test_eval_predictions_equal_the_pipeline_answers_for_one_batch(pipe, predictor, scenes, spatial, monkeypatch):
    if spatial:  # the spatial text in the prompt, on both paths
        proc = copy.copy(pipe.processor)
        proc.config = dataclasses.replace(proc.config, spatial_text_in_prompt=True)
        for owner in (pipe, pipe.generator, predictor, predictor.generator):
            monkeypatch.setattr(owner, "processor", proc)
    images = scenes[:4]
    answers = pipe(images, QUESTIONS, max_new_tokens=12, stop=["."])
    prompts = [Prompt([{"from": "human", "value": f"<image>\n{q}"}], [image], 12, (".",)) for image, q in zip(images, QUESTIONS)]
    predictions = predictor.predict(prompts)
    assert [p.error for p in predictions] == [None] * 4
    assert [p.text for p in predictions] == [a.text for a in answers]
    assert any(a.text for a in answers)  # something was generated, not four empty strings


def test_rows_with_other_lengths_and_stops_share_one_call(pipe, scenes):
    gen: Generator = pipe.generator
    rows = []
    for i, settings in enumerate([GenerationSettings(max_new_tokens=3), GenerationSettings(max_new_tokens=9, stop=("e",))]):
        record = pipe.refine([scenes[i]])[0]
        turns = [{"from": "human", "value": f"<image>\n{QUESTIONS[i]}"}]
        rows.append(Row(gen.encode(turns, [record]), [scenes[i]], [record], gen.instructions(turns), settings))
    together = gen.generate(rows)
    alone = [gen.generate([row])[0] for row in rows]
    assert together == alone
    assert together[0].completion_tokens <= 3 and "e" not in together[1].text


def test_parse_dtype():
    import torch

    assert parse_dtype("bfloat16") is torch.bfloat16 and parse_dtype(None) is None and parse_dtype(torch.float32) is torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'bf17'"):
        parse_dtype("bf17")
