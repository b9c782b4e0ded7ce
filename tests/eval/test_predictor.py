"""End to end through a real tiny saved Lyrics checkpoint (toy refiner): `lyrics eval` on a toy POPE
folder, batched answers equal to one-by-one answers, few-shot prompts with several images, and a
precomputed refiner store giving the same answers as the live refiner."""

import json

import pytest
from evalkit import shared_checkpoint, write_toy_pope
from typer.testing import CliRunner

from lyrics.cli import app
from lyrics.eval.predictor import LyricsPredictor, Prompt


@pytest.fixture(scope="module")
def ckpt():
    return shared_checkpoint()


@pytest.fixture(scope="module")
def pope(tmp_path_factory):
    return write_toy_pope(tmp_path_factory.mktemp("pope"))


def predictions(run_dir, seed=0):
    lines = (run_dir / f"predictions.seed{seed}.shard0of1.jsonl").read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


def test_lyrics_eval_end_to_end(ckpt, pope, tmp_path):
    args = ["eval", "--model", str(ckpt), "--benchmark", "pope", "--data", str(pope), "--split", "random",
            "--batch-size", "4", "--out", str(tmp_path / "out"), "--max-new-tokens", "6"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "POPE random" in result.output and "accuracy" in result.output
    run_dir = tmp_path / "out" / "pope-random-0shot"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["count"] == 6 and results["errors"] == 0 and results["model"] == str(ckpt.resolve())
    assert results["coordinate_format"] == "int1000" and set(results["metrics"]) >= {"accuracy", "f1", "yes_ratio"}
    assert 0.0 <= results["metrics"]["accuracy"] <= 100.0
    batched = predictions(run_dir)

    # one prompt at a time gives the same greedy answers as the batches of 4 (left padding)
    predictor = LyricsPredictor.from_pretrained(ckpt)
    for key, record in batched.items():
        image = pope / "val2014" / f"COCO_val2014_{int(key) // 10 + 1:012d}.jpg"
        alone = predictor.predict([Prompt([{"from": "human", "value": record["prompt"]}], [image], 6)])[0]
        assert alone.error is None and alone.text == record["prediction"]

    again = CliRunner().invoke(app, args)  # a finished run is not recomputed
    assert again.exit_code == 0 and "0 predicted, 6 already done" in again.output


def test_few_shot_prompts_carry_one_image_per_turn(ckpt, pope, tmp_path):
    args = ["eval", "--model", str(ckpt), "--benchmark", "pope", "--data", str(pope), "--split", "random",
            "--shots", "2", "--seeds", "0,1", "--out", str(tmp_path / "out"), "--max-new-tokens", "3"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "out" / "pope-random-2shot"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["seeds"] == [0, 1] and len(results["per_seed"]) == 2 and results["metrics_std"] is not None
    for record in predictions(run_dir, seed=1).values():
        assert len(record["exemplars"]) == 2 and record["error"] is None


def test_unreadable_image_fails_only_its_prompt(ckpt, pope, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    predictor = LyricsPredictor.from_pretrained(ckpt)
    good = pope / "val2014" / "COCO_val2014_000000000001.jpg"
    turns = [{"from": "human", "value": "<image>\nIs there a red circle in the image?"}]
    out = predictor.predict([Prompt(turns, [broken], 3), Prompt(turns, [good], 3)])
    assert out[0].text == "" and "broken.jpg" in out[0].error
    assert out[1].error is None
    with pytest.raises(ValueError, match="placeholders"):
        predictor.predict([Prompt(turns, [good, good], 3)])


def test_refiner_store_gives_the_live_answers(ckpt, pope, tmp_path):
    from lyrics.configuration import LyricsConfig
    from lyrics.refiner.job import run_job

    config = LyricsConfig.from_pretrained(str(ckpt)).refiner_config
    config.feature_dtype = "float32"
    run_job(pope / "val2014", tmp_path / "store", config, progress=False, workers=1)

    live = LyricsPredictor.from_pretrained(ckpt)
    stored = LyricsPredictor.from_pretrained(ckpt, refiner_store=tmp_path / "store", store_roots=[pope])
    assert stored.refiner is None
    prompts = [
        Prompt([{"from": "human", "value": "<image>\nIs there a red circle in the image?"}], [pope / "val2014" / f"COCO_val2014_{i:012d}.jpg"], 5)
        for i in (1, 2, 3)
    ]
    assert [p.text for p in stored.predict(prompts)] == [p.text for p in live.predict(prompts)]
    missing = Prompt(prompts[0].turns, [tmp_path / "elsewhere.jpg"], 5)
    (tmp_path / "elsewhere.jpg").write_bytes((pope / "val2014" / "COCO_val2014_000000000001.jpg").read_bytes())
    from lyrics.eval.predictor import RefinerStoreMiss

    with pytest.raises(RefinerStoreMiss, match="elsewhere.jpg"):
        stored.predict([missing])


def test_each_image_gets_its_own_spatial_text(ckpt, pope):
    import dataclasses

    import tiny

    predictor = LyricsPredictor.from_pretrained(ckpt)
    predictor.processor.config = dataclasses.replace(predictor.processor.config, spatial_text_in_prompt=True)
    records = [tiny.refiner_record("a", objects=1, seed=0), tiny.refiner_record("b", objects=2, seed=1)]
    turns = [{"from": "human", "value": "<image>\nq1"}, {"from": "gpt", "value": "a1"}, {"from": "human", "value": "<image>\nq2"}]
    proc = predictor.processor
    spatial = [r.spatial_text for r in records]
    assert proc._human(turns[0]["value"], iter(spatial[:1])) == f"<image>\nObjects: {spatial[0]}\n\nq1"
    assert proc._human("<image>\nq", iter([""])) == "<image>\nq"  # an image without objects gets no line, as in training
    pieces = [text for text, _ in proc.segments(turns, spatial, add_generation_prompt=True)]
    joined = "".join(pieces)
    assert joined.index(spatial[0]) < joined.index("q1") < joined.index("a1") < joined.index(spatial[1]) < joined.index("q2")
    with pytest.raises(ValueError, match="2 <image> placeholders but 1 spatial texts"):
        proc.encode(turns, spatial[:1])
    # the same single-image prompt encodes exactly as the processor encodes it for training
    ids, _ = proc.encode(turns[:1], records[0].spatial_text, add_generation_prompt=True)
    assert predictor.generator.encode(turns[:1], records[:1]) == ids
    images = [pope / "val2014" / "COCO_val2014_000000000001.jpg"] * 2
    assert predictor.predict([Prompt(turns, images, 3)])[0].error is None


def test_length_sorted_batches_give_the_same_answers(ckpt, pope):
    import dataclasses

    predictor = LyricsPredictor.from_pretrained(ckpt)
    predictor.processor.config = dataclasses.replace(predictor.processor.config, spatial_text_in_prompt=True)
    questions = ["Is there a red circle in the image?", "What is it?", "Is there a blue square in the image? Answer with yes or no.", "Where?"]
    prompts = [
        Prompt([{"from": "human", "value": f"<image>\n{q}"}], [pope / "val2014" / f"COCO_val2014_{i:012d}.jpg"], 4)
        for i in (1, 2, 3) for q in questions
    ]  # fmt: skip
    whole = [p.text for p in predictor.predict(prompts)]
    predictor.max_batch = 5
    assert [p.text for p in predictor.predict(prompts)] == whole
    records = {str(p.images[0]): predictor._store_record(p.images[0]) if predictor.store else None for p in prompts}
    records = predictor._records(list(records), {k: predictor._load(k)[0] for k in records})
    chunks = predictor._batches(list(range(len(prompts))), prompts, [[str(p.images[0])] for p in prompts], records)
    assert [len(c) for c in chunks] == [5, 5, 2] and sorted(i for c in chunks for i in c) == list(range(len(prompts)))
    sizes = [len(prompts[i].turns[0]["value"]) + len(records[str(prompts[i].images[0])].spatial_text) for c in chunks for i in c]
    assert sizes == sorted(sizes, reverse=True)


def test_eval_runs_the_checkpoint_s_recorded_refiner_and_refuses_another(ckpt, pope, tmp_path):
    """The live refiner is the one recorded in the checkpoint (its training store's); an eval store or
    a --refiner option that contradicts the record is refused with the differing fields named."""
    import shutil

    from lyrics.configuration import LyricsConfig
    from lyrics.refiner.job import run_job
    from lyrics.refiner.provenance import RefinerMismatch, refiner_fields

    shutil.copytree(ckpt, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    trained = {**refiner_fields(LyricsConfig.from_pretrained(str(ckpt)).refiner_config), "max_objects": 2}
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**config, "trained_refiner_config": trained}))

    predictor = LyricsPredictor.from_pretrained(tmp_path / "ckpt")
    assert predictor.refiner.config.max_objects == 2 and predictor.model.config.refiner_config.max_objects != 2

    other = LyricsConfig.from_pretrained(str(ckpt)).refiner_config  # the config's refiner: max_objects differs
    run_job(pope / "val2014", tmp_path / "store", other, progress=False, workers=1)
    with pytest.raises(RefinerMismatch, match=r"max_objects: 2 vs"):
        LyricsPredictor.from_pretrained(tmp_path / "ckpt", refiner_store=tmp_path / "store")

    args = ["eval", "--model", str(tmp_path / "ckpt"), "--benchmark", "pope", "--data", str(pope), "--split", "random",
            "--out", str(tmp_path / "out"), "--max-new-tokens", "2", "--refiner", "max_objects=5"]  # fmt: skip
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 2 and "max_objects: 2 vs 5" in result.output
    assert not (tmp_path / "out" / "pope-random-0shot" / "results.json").exists()


def test_shared_prefix_gives_the_one_at_a_time_answers(ckpt, pope):
    """Several questions per image answered from one encoding of their common prefix equal plain
    `generate` on each prompt alone, with and without spatial text and in chunks of `max_batch`."""
    import dataclasses

    questions = ["Is there a red circle in the image?", "What is it?", "Is there a blue square in the image? Answer with yes or no.", "Where?"]
    prompts = [
        Prompt([{"from": "human", "value": f"<image>\n{q}"}], [pope / "val2014" / f"COCO_val2014_{i:012d}.jpg"], 6)
        for i in (1, 2) for q in questions
    ] + [Prompt([{"from": "human", "value": "<image>\nWhat is it?"}], [pope / "val2014" / "COCO_val2014_000000000003.jpg"], 6)]  # fmt: skip
    for spatial in (False, True):
        alone = LyricsPredictor.from_pretrained(ckpt, max_batch=1)
        shared = LyricsPredictor.from_pretrained(ckpt, share_prefix=True, max_batch=3)
        for p in (alone, shared):
            p.processor.config = dataclasses.replace(p.processor.config, spatial_text_in_prompt=spatial)
        assert shared.share_prefix
        calls = []
        generate = shared.model.generate
        shared.model.generate = lambda **kw: calls.append(kw["input_ids"].shape[0]) or generate(**kw)
        expected = [a.text for a in alone.predict(prompts)]
        assert [a.text for a in shared.predict(prompts)] == expected
        assert calls == [1]  # only the image asked one question went through `generate`
        assert len(set(expected)) > 1  # the answers differ, so a mix-up between rows would show


def test_common_prefix_leaves_each_row_a_token_and_refuses_processors(ckpt):
    from lyrics.inference.prefix_cache import common_prefix, shareable

    assert common_prefix([[1, 2, 3, 4], [1, 2, 3, 5]]) == 3
    assert common_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter row keeps its last token
    assert common_prefix([[7, 2], [1, 2]]) == 0
    model = LyricsPredictor.from_pretrained(ckpt).model.language_model
    assert shareable(model)
    model.generation_config.repetition_penalty = 1.3
    assert not shareable(model)


def test_zero_grounding_answers_agree_with_and_without_the_shared_prefix(ckpt, pope):
    """`zero_grounding=True` reaches both generation paths: the shared-prefix answers equal the
    one-at-a-time `generate` answers under the switch, the shared prefix holds the projection's bias at
    the grounding positions, and the switch changes the answers."""
    import torch

    questions = ["Is there a red circle in the image?", "What is it?", "Where?"]
    prompts = [
        Prompt([{"from": "human", "value": f"<image>\n{q}"}], [pope / "val2014" / f"COCO_val2014_{i:012d}.jpg"], 6)
        for i in (1, 2) for q in questions
    ]  # fmt: skip
    full = LyricsPredictor.from_pretrained(ckpt, max_batch=1)
    alone = LyricsPredictor.from_pretrained(ckpt, max_batch=1, zero_grounding=True)
    shared = LyricsPredictor.from_pretrained(ckpt, share_prefix=True, max_batch=3, zero_grounding=True)
    assert full.model.query_ablation is None
    assert alone.model.query_ablation == shared.model.query_ablation == "zero_grounding" and shared.share_prefix
    model, prefixes = shared.model, []
    model.generate = lambda **kw: pytest.fail("every image has several questions: none should go through generate")
    embed = model.embed
    model.embed = lambda ids, visual: prefixes.append((ids, embed(ids, visual))) or prefixes[-1][1]
    expected = [a.text for a in alone.predict(prompts)]
    assert [a.text for a in shared.predict(prompts)] == expected
    assert len(prefixes) == 2  # one shared prefix per image
    nv = model.config.mqformer_config.num_query_tokens
    ng = model.config.mqformer_config.num_grounding_query_tokens
    for ids, embeds in prefixes:
        at_image = embeds[ids == model.config.image_token_index]
        assert at_image.shape[0] == nv + ng
        torch.testing.assert_close(at_image[nv:], model.language_projection.bias.expand(ng, -1), rtol=0, atol=0)
    assert expected != [a.text for a in full.predict(prompts)]  # the grounding queries matter here


def test_lyrics_eval_zero_grounding_flag_records_its_own_model_name(ckpt, pope, tmp_path):
    """`lyrics eval --zero-grounding` scores the ablated model under `<ckpt> (zero-grounding)`: it
    neither resumes from nor mixes with the full model's run in one --out, and --report lists both."""
    from lyrics.eval import command

    args = ["eval", "--model", str(ckpt), "--benchmark", "pope", "--data", str(pope), "--split", "random",
            "--batch-size", "4", "--max-new-tokens", "6", "--share-prefix"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "zeroed"), "--zero-grounding"])
    assert result.exit_code == 0, result.output
    zeroed = json.loads((tmp_path / "zeroed" / "pope-random-0shot" / "results.json").read_text())
    assert zeroed["model"] == f"{ckpt.resolve()} (zero-grounding)" and zeroed["errors"] == 0
    mixed = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "zeroed")], env={"COLUMNS": "400"})
    assert mixed.exit_code != 0 and "another configuration" in mixed.output  # the full model's run is not mixed in
    assert CliRunner().invoke(app, [*args, "--out", str(tmp_path / "full")]).exit_code == 0
    report = command.write_report([tmp_path / "full", tmp_path / "zeroed"], None)
    assert f"{ckpt.name} (zero-grounding)" in report and f"| {ckpt.name} |" in report
