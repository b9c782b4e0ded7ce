"""LyricsPipeline: live refiner -> model -> grounded result; batching, multi-turn, regions, streaming."""

import io

import pytest
from PIL import Image

from lyrics.inference import GenerationSettings, PipelineResult, answer_boxes
from lyrics.inference.drawing import draw_result, save_picture
from lyrics.inference.inputs import InputError
from lyrics.inference.pipeline import ChatRequest
from lyrics.inference.stopping import StopFilter, cut_at_stop

Q = ["what color is the circle?", "how many objects are there?", "is there a red square?", "what is left of the star?"]


def test_single_call_carries_text_refiner_objects_and_counts(pipe, scenes):
    result = pipe(scenes[2], Q[0], max_new_tokens=10)
    assert isinstance(result, PipelineResult) and result.text
    record = pipe.refiner.refine(scenes[2])
    assert result.tags == record.tags and len(result.tags) >= 2
    assert [o.tag for o in result.objects] == [o.tag for o in record.objects]
    assert result.spatial_text == record.spatial_text and "<Bbox>" in result.spatial_text
    assert result.image_size == scenes[2].size
    assert result.finish_reason in ("stop", "length") and 1 <= result.completion_tokens <= 10
    assert result.prompt_tokens > pipe.model.config.num_image_tokens
    assert result.conversation[0]["value"].startswith("<image>\n") and result.conversation[-1] == {"from": "gpt", "value": result.text}


def test_batched_answers_equal_single_answers(pipe, scenes):
    singles = [pipe(scenes[i], Q[i], max_new_tokens=12).text for i in range(4)]
    batched = pipe(scenes[:4], Q, max_new_tokens=12)
    assert [r.text for r in batched] == singles
    assert len(set(singles)) > 1  # different images / prompts give different answers


def test_rows_with_different_lengths_stops_and_sampling_share_a_batch(pipe, scenes):
    long = pipe(scenes[0], Q[0], max_new_tokens=12).text
    words = long.split()
    stop = " " + words[3]
    requests = [
        ChatRequest(scenes[0], Q[0], settings=GenerationSettings(max_new_tokens=12)),
        ChatRequest(scenes[0], Q[0], settings=GenerationSettings(max_new_tokens=3)),
        ChatRequest(scenes[0], Q[0], settings=GenerationSettings(max_new_tokens=12, stop=(stop,))),
        ChatRequest(scenes[1], Q[1], settings=GenerationSettings(max_new_tokens=5, do_sample=True, temperature=0.7)),
    ]
    full, short, stopped, sampled = pipe.run(requests)
    assert full.text == long and full.finish_reason in ("length", "stop")
    assert short.completion_tokens == 3 and long.startswith(short.text) and short.finish_reason == "length"
    assert stopped.text == long[: long.find(stop)].strip() and stopped.finish_reason == "stop"
    assert stopped.completion_tokens == 4  # tokens up to the one that completed the stop string
    assert 1 <= sampled.completion_tokens <= 5


def test_multi_turn_keeps_the_dialogue_and_one_image(pipe, scenes):
    first = pipe(scenes[1], Q[0], max_new_tokens=6)
    second = pipe(scenes[1], "and the square?", history=first.conversation, max_new_tokens=6)
    assert [t["from"] for t in second.conversation] == ["human", "gpt", "human", "gpt"]
    assert sum(t["value"].count("<image>") for t in second.conversation) == 1
    assert second.prompt_tokens > first.prompt_tokens + first.completion_tokens - 1
    # plain LLaVA-style history without the placeholder gets it in its first human turn
    plain = [{"from": "human", "value": Q[0]}, {"from": "gpt", "value": first.text}]
    assert pipe(scenes[1], "and the square?", history=plain, max_new_tokens=6).text == second.text


def test_stream_pieces_join_to_the_answer(pipe, scenes):
    reference = pipe(scenes[3], Q[1], max_new_tokens=10)
    stream = pipe.stream(scenes[3], Q[1], max_new_tokens=10)
    pieces = list(stream)
    assert len(pieces) > 1 and "".join(pieces).strip() == reference.text == stream.result.text
    stop = " " + reference.text.split()[2]
    cut = pipe.stream(scenes[3], Q[1], max_new_tokens=10, stop=[stop])
    assert "".join(cut) == reference.text[: reference.text.find(stop)] == cut.result.text


def test_stop_filter_never_emits_past_a_stop_string():
    f = StopFilter(["END"])
    out = "".join(f.feed(p) for p in ["  hello E", "N", "D world"]) + f.flush()
    assert out == "hello " and f.stopped
    assert cut_at_stop("a b STOP c", ["STOP", "b"]) == ("a ", True)


def test_regions_fill_the_question_and_come_back_in_pixels(pipe, scenes):
    result = pipe(scenes[0], "what is the object <region>?", regions=[("thing", (8, 8, 40, 40))], max_new_tokens=4)
    assert "<T>thing</T><Bbox>(83,83),(416,416)</Box>" in result.conversation[0]["value"]
    assert result.regions == [(8.0, 8.0, 40.0, 40.0)]
    # the same box in 0-1000 units, in a question without a placeholder: one is put before the "?"
    same = pipe(scenes[0], "what is the object?", regions=[(83.3333, 83.3333, 416.6667, 416.6667)], region_format="0-1000", max_new_tokens=4)
    assert "what is the object <Bbox>(83,83),(416,416)</Box>?" in same.conversation[0]["value"]
    assert [round(v, 2) for v in same.regions[0]] == [8.0, 8.0, 40.0, 40.0]
    with pytest.raises(InputError, match="not inside the 96x96 image"):
        pipe(scenes[0], "what is <region>?", regions=[(50, 50, 97, 90)], max_new_tokens=2)


def test_answer_boxes_come_back_in_pixels_with_tags(scenes):
    text = "the <T>red circle</T><Bbox>(500,0),(999,500)</Box> and [100, 100, 300, 200] and (300,200),(100,100)"
    boxes = answer_boxes(text, 200, 100)
    assert [b.tag for b in boxes] == ["red circle", None, None]
    assert boxes[0].box == pytest.approx((100, 0, 199.8, 50)) and boxes[0].box_norm == pytest.approx((0.5, 0, 0.999, 0.5))
    assert boxes[1].box == pytest.approx((20, 10, 60, 20)) and boxes[2].box == pytest.approx((20, 10, 60, 20))
    assert answer_boxes("no boxes (1,2) here", 10, 10) == []


def test_drawn_picture_shows_answer_boxes(pipe, scenes, tmp_path):
    record = pipe.refiner.refine(scenes[2])
    text = "<T>red circle</T><Bbox>(100,100),(500,500)</Box>"
    result = PipelineResult(text, answer_boxes(text, 96, 96), record, [], 1, 1, "stop")
    picture = draw_result(scenes[2], result)
    assert picture.size == scenes[2].size
    assert picture.getpixel((9, 30)) == (255, 0, 255)  # the answer box outline (x1 = 9.6 px)
    assert draw_result(scenes[2], result, refiner_objects=False).getpixel((0, 0)) == scenes[2].getpixel((0, 0))
    path = save_picture(picture, tmp_path / "out.png")
    assert Image.open(path).size == picture.size and not list(tmp_path.glob("*.tmp.*"))


def test_images_from_paths_bytes_and_bad_input(pipe, scenes, tmp_path):
    scenes[0].save(tmp_path / "a.png")
    buffer = io.BytesIO()
    scenes[0].save(buffer, format="PNG")
    by_path = pipe(str(tmp_path / "a.png"), Q[0], max_new_tokens=4).text
    assert pipe(buffer.getvalue(), Q[0], max_new_tokens=4).text == by_path == pipe(scenes[0], Q[0], max_new_tokens=4).text
    with pytest.raises(InputError, match="not an image"):
        pipe(b"<html>404</html>", Q[0])
    with pytest.raises(InputError, match="may not contain '<image>'"):
        pipe(scenes[0], "<image> hi")
    with pytest.raises(InputError, match="empty"):
        pipe(scenes[0], "   ")
    with pytest.raises(TypeError, match="unexpected keyword"):
        pipe(scenes[0], Q[0], max_new_token=3)
    assert pipe(None, "what is a circle?", max_new_tokens=3).record is None  # text-only works


def test_prompt_over_the_context_is_refused(pipe, scenes):
    with pytest.raises(InputError, match="max_length"):
        pipe(scenes[0], "circle " * 600, max_new_tokens=2)


def test_stream_errors_reach_the_consumer(pipe, scenes):
    with pytest.raises(InputError, match="placeholder"):
        list(pipe.stream(scenes[0], "what is <region>?", max_new_tokens=3))
    with pytest.raises(ValueError, match="beam search"):
        pipe.stream(scenes[0], Q[0], num_beams=2)


def test_spatial_text_goes_into_the_prompt_when_the_checkpoint_says_so(pipe, scenes, monkeypatch):
    import copy
    import dataclasses

    plain = pipe.prepare([ChatRequest(scenes[2], Q[0])])[0]
    proc = copy.copy(pipe.processor)
    proc.config = dataclasses.replace(proc.config, spatial_text_in_prompt=True)
    monkeypatch.setattr(pipe, "processor", proc)
    monkeypatch.setattr(pipe.generator, "processor", proc)  # the generation layer encodes the prompt
    with_spatial = pipe.prepare([ChatRequest(scenes[2], Q[0])])[0]
    added = pipe.decode(with_spatial.input_ids)
    assert len(with_spatial.input_ids) > len(plain.input_ids) + 10
    assert all(word in added for tag in plain.record.tags for word in tag.split()) and "objects" in added


def test_leaving_a_stream_early_stops_generation(pipe, scenes):
    stream = pipe.stream(scenes[0], Q[0], max_new_tokens=200)
    pieces = iter(stream)
    assert next(pieces)
    pieces.close()  # the consumer leaves: the generation thread is told to stop
    stream._thread.join(30)
    assert not stream._thread.is_alive()
    assert stream.result.finish_reason == "cancelled" and stream.result.completion_tokens < 200


# --- which refiner runs: the checkpoint's own ------------------------------------------------------
def test_a_checkpoint_without_a_record_runs_its_refiner_config(pipe):
    assert pipe.model.config.trained_refiner_config is None
    assert pipe.refiner.config.to_dict() == pipe.model.config.refiner_config.to_dict()


def test_the_refiner_of_the_training_store_is_saved_and_runs_live(checkpoint, pipe, scenes, tmp_path):
    """A stage-2 model that recorded its store's refiner saves it; the pipeline then runs that refiner
    (here: top-2 objects and a higher box threshold), not the config's refiner_config (top-8)."""
    from lyrics.inference import LyricsPipeline
    from lyrics.models.conditional_generation import LyricsForConditionalGeneration
    from lyrics.models.processing import LyricsProcessor
    from lyrics.refiner.job import load_refiner_config, run_job
    from lyrics.refiner.provenance import RefinerMismatch, record_store_refiner
    from lyrics.refiner.store import open_store

    (tmp_path / "images").mkdir()
    scenes[2].save(tmp_path / "images" / "a.png")
    run_job(tmp_path / "images", tmp_path / "store", load_refiner_config("tiny", None, ["max_objects=2", "box_threshold=0.3"], ["toy"]), progress=False, workers=1)
    model = LyricsForConditionalGeneration.from_pretrained(checkpoint)
    record_store_refiner(model.config, open_store(tmp_path / "store"))
    model.save_pretrained(tmp_path / "ckpt", processor=LyricsProcessor.from_pretrained(checkpoint))

    recorded = LyricsPipeline.from_pretrained(tmp_path / "ckpt")
    assert (recorded.refiner.config.max_objects, recorded.refiner.config.box_threshold) == (2, 0.3)
    assert recorded.model.config.refiner_config.max_objects == 8
    assert len(pipe.refiner.refine(scenes[5]).objects) == 3  # the config's refiner keeps all three shapes
    assert len(recorded(scenes[5], "what is there?", max_new_tokens=2).record.objects) == 2
    assert LyricsPipeline.from_pretrained(tmp_path / "ckpt", refiner={"batch_size": 1}).refiner.config.batch_size == 1
    with pytest.raises(RefinerMismatch, match=r"max_objects: 2 vs 8"):
        LyricsPipeline.from_pretrained(tmp_path / "ckpt", refiner={"max_objects": 8})
