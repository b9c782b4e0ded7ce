"""Few-shot prompts (Figure 5): seeded, per-query exemplar draws that never show the query's image,
exemplar turns before the query, and scores averaged over seeds."""

import json
from pathlib import Path

import pytest
from evalkit import ScriptedPredictor, write_benchmark

from lyrics.data.templates import default_bank
from lyrics.eval.benchmarks import EvalSample, get_benchmark
from lyrics.eval.fewshot import ExemplarPool, build_turns
from lyrics.eval.runner import EvalConfig, run_eval


def pool_samples(n=40, per_image=2):
    return [
        EvalSample(f"q{i}", Path(f"img{i // per_image}.jpg"), {"question": f"question {i}?"}, {"answers": [f"answer {i}"]})
        for i in range(n)
    ]


def test_exemplar_draws_are_deterministic_per_seed_and_query():
    samples = pool_samples()
    pool, again = ExemplarPool(samples, "vqav2/val"), ExemplarPool(list(samples), "vqav2/val")
    query = samples[5]
    draw = [s.sample_id for s in pool.draw(query, 4, seed=0)]
    assert draw == [s.sample_id for s in again.draw(query, 4, seed=0)]
    assert len(set(draw)) == 4
    assert all(s.image_key != query.image_key for s in pool.draw(query, 30, seed=1))  # never the query's image
    draws = {tuple(s.sample_id for s in pool.draw(query, 4, seed)) for seed in range(5)}
    assert len(draws) == 5  # five seeds, five exemplar sets
    assert [s.sample_id for s in ExemplarPool(samples, "okvqa/val").draw(query, 4, 0)] != draw  # salted per benchmark
    with pytest.raises(ValueError, match="pool has 38"):
        pool.draw(query, 39, seed=0)


def test_turns_put_exemplars_before_the_query():
    spec = get_benchmark("vqav2")
    template = default_bank().get("vqa", 2)
    samples = pool_samples(4, per_image=1)
    turns = build_turns(spec, template, samples[0], samples[1:3])
    assert [t["from"] for t in turns] == ["human", "gpt", "human", "gpt", "human"]
    assert turns[0]["value"] == "<image>\nQuestion: question 1? Answer:" and turns[1]["value"] == "answer 1"
    assert turns[-1]["value"] == "<image>\nQuestion: question 0? Answer:"


def test_fewshot_run_uses_the_train_split_and_averages_seeds(tmp_path):
    data, _, _ = write_benchmark("scienceqa-img", tmp_path / "data")
    predictor = ScriptedPredictor({"1": "red"})
    config = EvalConfig("scienceqa-img", data, shots=1, seeds=[3, 7], out=tmp_path / "out", model="scripted")
    outcome = run_eval(predictor, config)
    prompt = predictor.batches[0][0]
    assert len(prompt.images) == 2 and prompt.images[0].parts[-3:] == ("train", "3", "image.png")
    assert prompt.turns[1] == {"from": "gpt", "value": "cow"}  # the exemplar's answer: the correct option's text
    results = outcome.results
    assert outcome.run_dir.name == "scienceqa-img-test-1shot"
    assert results["seeds"] == [3, 7] and len(results["per_seed"]) == 2
    assert results["metrics"]["accuracy"] == 100.0 and results["metrics_std"]["accuracy"] == 0.0
    line = json.loads((outcome.run_dir / "predictions.seed7.shard0of1.jsonl").read_text().splitlines()[0])
    assert line["exemplars"] == ["3"]


def test_exemplars_do_not_depend_on_batching_or_sharding(tmp_path):
    data, _, _ = write_benchmark("mme", tmp_path / "data")  # no train split: exemplars from the split itself

    def exemplars(out, batch_size, world=1):
        for rank in range(world):
            config = EvalConfig("mme", data, shots=2, seeds=[0], out=out, shard=(rank, world), batch_size=batch_size)
            run_eval(ScriptedPredictor(default="Yes"), config)
        lines = [json.loads(line) for p in sorted((out / "mme-all-2shot").glob("predictions*.jsonl")) for line in p.read_text().splitlines()]
        return {line["id"]: line["exemplars"] for line in lines}

    single = exemplars(tmp_path / "a", batch_size=3)
    sharded = exemplars(tmp_path / "b", batch_size=7, world=2)
    assert single == sharded and len(single) == 28
    for query, chosen in single.items():
        image = query.split("#")[0]
        assert len(chosen) == 2 and all(e.split("#")[0] != image for e in chosen)


def test_default_fewshot_seeds_are_five(tmp_path):
    data, _, _ = write_benchmark("pope", tmp_path / "data")
    (data / "coco_pope_random.json").write_text(
        "".join(
            json.dumps({"question_id": i, "image": f"COCO_val2014_{i:012d}.jpg", "text": f"Is there a thing {i}?", "label": "yes"}) + "\n"
            for i in range(1, 5)
        )
    )
    import shutil

    for i in range(1, 5):
        shutil.copy(data / "val2014" / "COCO_val2014_000000000042.jpg", data / "val2014" / f"COCO_val2014_{i:012d}.jpg")
    outcome = run_eval(ScriptedPredictor(default="yes"), EvalConfig("pope", data, split="random", shots=1, out=tmp_path / "out"))
    assert outcome.results["seeds"] == [0, 1, 2, 3, 4]
