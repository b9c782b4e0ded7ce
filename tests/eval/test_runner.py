"""The runner: batched prediction files, restart without recomputation, sharding, the merge step and
the results file."""

import json

import pytest
from evalkit import Killed, ScriptedPredictor, write_benchmark

from lyrics.distributed import parse_shard
from lyrics.eval.runner import EvalConfig, read_predictions, run_eval


def mme_answer(prompt):
    # a fixed but uneven pattern, so a wrong merge changes the score
    return "Yes" if sum(map(ord, prompt.key)) % 3 else "No"


@pytest.fixture
def mme(tmp_path):
    data, _, _ = write_benchmark("mme", tmp_path / "data")
    return data


def config(data, out, **kw):
    return EvalConfig("mme", data, out=out, model="scripted", batch_size=kw.pop("batch_size", 5), **kw)


def test_results_file_records_how_each_number_was_made(mme, tmp_path):
    outcome = run_eval(ScriptedPredictor(mme_answer), config(mme, tmp_path / "out"))
    results = json.loads((outcome.run_dir / "results.json").read_text())
    assert outcome.run_dir.name == "mme-all-0shot"
    for key in ("metrics", "count", "template", "model", "benchmark", "split", "shots", "seeds", "timestamp"):
        assert key in results
    assert results["count"] == 28 and results["shots"] == 0 and results["model"] == "scripted"
    assert results["template"]["index"] == 0 and results["decoding"] == "greedy"
    lines = (outcome.run_dir / "predictions.seed0.shard0of1.jsonl").read_text().splitlines()
    assert len(lines) == 28
    first = json.loads(lines[0])
    assert set(first) >= {"id", "prediction", "error", "prompt"} and first["prompt"].startswith("<image>\n")


def test_kill_and_restart_recomputes_nothing(mme, tmp_path):
    reference = run_eval(ScriptedPredictor(mme_answer), config(mme, tmp_path / "ref")).results

    killed = ScriptedPredictor(mme_answer, fail_after=2)
    with pytest.raises(Killed):
        run_eval(killed, config(mme, tmp_path / "out"))
    done = killed.seen
    assert len(done) == 10
    path = tmp_path / "out" / "mme-all-0shot" / "predictions.seed0.shard0of1.jsonl"
    with open(path, "ab") as handle:  # a write cut short by the kill
        handle.write(b'{"id": "scene/0001.jpg#0", "predic')

    again = ScriptedPredictor(mme_answer)
    outcome = run_eval(again, config(mme, tmp_path / "out"))
    assert len(again.seen) == 18 and not set(again.seen) & set(done)
    assert outcome.computed == 18 and outcome.reused == 10
    assert path.read_bytes().endswith(b"\n") and len(path.read_text().splitlines()) == 28
    assert outcome.results["metrics"] == reference["metrics"]

    third = ScriptedPredictor(mme_answer)
    assert run_eval(third, config(mme, tmp_path / "out")).computed == 0 and third.batches == []


def test_two_shards_make_one_run(mme, tmp_path):
    single = run_eval(ScriptedPredictor(mme_answer), config(mme, tmp_path / "one")).results
    first, second = ScriptedPredictor(mme_answer), ScriptedPredictor(mme_answer)
    a = run_eval(first, config(mme, tmp_path / "two", shard=(0, 2)))
    assert a.results is None and "14 of 28" in a.pending[0]
    b = run_eval(second, config(mme, tmp_path / "two", shard=(1, 2), batch_size=3))
    assert len(set(first.seen) | set(second.seen)) == 28 and not set(first.seen) & set(second.seen)
    assert len(first.seen) == len(second.seen) == 14
    assert b.results["metrics"] == single["metrics"] and b.results["count"] == 28
    assert len(b.results["predictions"]) == 2


def test_sharding_is_deterministic_and_resumes_after_changing_n(mme, tmp_path):
    p1 = ScriptedPredictor(mme_answer)
    run_eval(p1, config(mme, tmp_path / "out", shard=(1, 4)))
    p2 = ScriptedPredictor(mme_answer)
    run_eval(p2, config(mme, tmp_path / "again", shard=(1, 4)))
    assert p1.seen == p2.seen and len(p1.seen) == 7
    p3 = ScriptedPredictor(mme_answer)
    outcome = run_eval(p3, config(mme, tmp_path / "out"))  # the whole split, one process
    assert len(p3.seen) == 21 and not set(p3.seen) & set(p1.seen)
    assert outcome.results is not None


def test_a_run_folder_of_another_configuration_is_refused(mme, tmp_path):
    run_eval(ScriptedPredictor(mme_answer), config(mme, tmp_path / "out", limit=4))
    with pytest.raises(ValueError, match="template"):
        run_eval(ScriptedPredictor(mme_answer), config(mme, tmp_path / "out", template=3))


def test_a_damaged_middle_line_is_an_error_not_a_silent_skip(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "prediction": "x"}\nnot json\n{"id": "b", "prediction": "y"}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2"):
        read_predictions(path)


def test_bad_images_are_recorded_and_scored_wrong(tmp_path):
    data, _, _ = write_benchmark("pope", tmp_path / "data")

    class Failing(ScriptedPredictor):
        def predict(self, prompts):
            from lyrics.eval.predictor import Prediction

            self.batches.append(list(prompts))
            return [Prediction("", "corrupt image") if p.key == "2" else Prediction("yes") for p in prompts]

    outcome = run_eval(Failing(), EvalConfig("pope", data, split="random", out=tmp_path / "out"))
    # question 2 (label no) failed: its empty answer is read by POPE's parser as "yes", i.e. wrong
    assert outcome.results["errors"] == 1 and outcome.results["metrics"]["accuracy"] == 50.0


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "a/b", "1"):
        with pytest.raises(ValueError):
            parse_shard(bad)
