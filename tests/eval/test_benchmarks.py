"""Benchmark loaders on tiny folders in each official layout: the samples, the prompts (Table 10
templates) and the scores of scripted answers against hand-computed values."""

import json
import shutil

import pytest
from evalkit import ScriptedPredictor, write_benchmark, write_vqav2_testdev

from lyrics.data.official import MissingFilesError
from lyrics.eval.benchmarks import (
    BENCHMARKS,
    apply_limit,
    expand_splits,
    get_benchmark,
    load_samples,
)
from lyrics.eval.metrics import cider
from lyrics.eval.runner import EvalConfig, run_eval


def evaluate(tmp_path, name, answers, **overrides):
    data, images, split = write_benchmark(name, tmp_path / "data")
    predictor = ScriptedPredictor(answers)
    config = EvalConfig(name, data, split=overrides.pop("split", split), images=images, out=tmp_path / "out", model="scripted", **overrides)
    outcome = run_eval(predictor, config)
    return outcome, predictor


def prompts_of(predictor):
    return {p.key: p.turns[-1]["value"] for batch in predictor.batches for p in batch}


def test_every_benchmark_of_the_issue_is_specified():
    assert set(BENCHMARKS) == {
        "coco-captions", "nocaps", "flickr30k", "vqav2", "okvqa", "vizwiz", "textvqa", "gqa", "ocrvqa",
        "scienceqa-img", "refcoco", "refcoco+", "refcocog", "pope", "mme", "llava-bench",
    }  # fmt: skip
    assert get_benchmark("llava_bench") is get_benchmark("llava-bench")
    assert expand_splits(get_benchmark("refcoco"), None) == ["val", "testA", "testB"]
    assert expand_splits(get_benchmark("refcocog"), "all") == ["val", "test"]
    assert expand_splits(get_benchmark("pope"), None) == ["random", "popular", "adversarial"]
    assert expand_splits(get_benchmark("vqav2"), "all") == ["val2014"]  # test-dev has no public answers
    assert expand_splits(get_benchmark("mme"), None) == ["all"]
    with pytest.raises(ValueError, match="unknown benchmark"):
        get_benchmark("vqa3")


def test_vqav2_prompt_and_vqa_accuracy(tmp_path):
    # 420: 8 x red, 2 x pink -> "Pink" matches 2 annotators: mean over leave-one-out = (8*2/3 + 2*1/3)/10 = 0.6
    # 421: 6 x "1", 4 x "one" -> "one" normalises to "1": 1.0
    # 70: 10 x "yes", annotators agree so nothing is normalised: "Yes" scores 0 raw, 1.0 after EvalAI cleaning
    outcome, predictor = evaluate(tmp_path, "vqav2", {"420": "Pink", "421": "one", "70": "Yes"})
    metrics = outcome.results["metrics"]
    assert metrics["vqa_accuracy"] == pytest.approx(round(100 * 2.6 / 3, 2))
    assert metrics["vqa_accuracy_raw"] == pytest.approx(round(100 * 1.6 / 3, 2))
    assert metrics["vqa_accuracy[other]"] == pytest.approx(60.0)
    assert metrics["primary"] == metrics["vqa_accuracy"]
    assert prompts_of(predictor)["420"] == "<image>\nQuestion: What color is the square? Answer:"
    assert outcome.results["template"] == {"task": "vqa", "index": 2, "text": "<Image>Question: {Question} Answer:"}
    image = predictor.batches[0][0].images[0]
    assert image.name == "COCO_toyval_000000000042.jpg" and image.is_file()


def test_okvqa_uses_its_own_file_names(tmp_path):
    outcome, _ = evaluate(tmp_path, "okvqa", {"420": "red", "421": "1", "70": "yes"})
    assert outcome.results["metrics"]["vqa_accuracy"] == 100.0


def test_textvqa_and_vizwiz(tmp_path):
    outcome, predictor = evaluate(tmp_path / "t", "textvqa", {"34602": "Nokia"})  # 7 of 10 annotators
    assert outcome.results["metrics"]["vqa_accuracy"] == 100.0
    assert prompts_of(predictor)["34602"] == "<image>\nQuestion: what brand is this? Answer:"  # text_vqa[1]
    outcome, _ = evaluate(tmp_path / "v", "vizwiz", {"VizWiz_val_00000000.jpg": "a can of soup"})
    assert outcome.results["metrics"]["vqa_accuracy"] == 0.0


def test_gqa_and_ocrvqa_exact_match(tmp_path):
    outcome, _ = evaluate(tmp_path / "g", "gqa", {"201": "Yes.", "202": "a cup"})  # "a cup" != "cup"
    assert outcome.results["metrics"]["exact_match"] == 50.0
    outcome, predictor = evaluate(tmp_path / "o", "ocrvqa", {"222_0": "no"})  # only book 222 is in the test split
    assert outcome.results["metrics"]["exact_match"] == 100.0 and outcome.results["count"] == 1
    assert predictor.batches[0][0].images[0].name == "222.png"  # the URL's extension


def test_scienceqa_img_prompt_and_choice(tmp_path):
    outcome, predictor = evaluate(tmp_path, "scienceqa-img", {"1": "(b) red"})
    assert outcome.results["count"] == 1  # problem 2 has no image, problem 3 is in train
    assert outcome.results["metrics"]["accuracy"] == 100.0
    assert prompts_of(predictor)["1"] == (
        "<image>\nQuestion: Which color is the square? Context: Look closely. Options: (a) blue (b) red. Answer:"
    )


def test_refcoco_prompt_and_acc_at_half(tmp_path):
    # refs of the train split: ann 900 = bbox [10, 20, 30, 40] in a 100 x 80 image -> (0.1, 0.25, 0.4, 0.75)
    answers = {"11": "<Bbox>(100,250),(400,750)</Box>", "12": "(500,250),(800,750)", "31": "somewhere on the left"}
    outcome, predictor = evaluate(tmp_path, "refcoco", answers)
    metrics = outcome.results["metrics"]
    assert metrics["acc@0.5"] == pytest.approx(100 / 3, abs=1e-3)
    assert metrics["no_box"] == pytest.approx(100 / 3, abs=1e-3)
    assert prompts_of(predictor)["11"] == "<image>\nIn the given image, could you find and tell me the coordinates of man on the left?"


def test_refcoco_template_with_a_bbox_slot_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"usable --template values: \[0, 2, 4, 5\]"):
        evaluate(tmp_path, "refcoco", {}, template=1)


def test_pope_prompt_and_metrics(tmp_path):
    outcome, predictor = evaluate(tmp_path, "pope", {"1": "Yes, there is a dog.", "2": "Yes"}, split="random")
    metrics = outcome.results["metrics"]
    assert (metrics["accuracy"], metrics["precision"], metrics["recall"], metrics["yes_ratio"]) == (50.0, 50.0, 100.0, 100.0)
    assert metrics["f1"] == pytest.approx(200 / 3, abs=1e-3)
    assert prompts_of(predictor)["1"] == "<image>\nIs there a dog in the image?"


def test_mme_scores_perception_and_cognition(tmp_path):
    # every subtask: one image, "Yes" then "No" gold; answering "Yes" to both gives acc 0.5, acc+ 0 -> 50
    def answer(prompt):
        return "No" if prompt.key.startswith("existence") and "cat" in prompt.turns[-1]["value"] else "Yes"

    outcome, predictor = evaluate(tmp_path, "mme", answer)
    metrics = outcome.results["metrics"]
    assert metrics["score[existence]"] == 200.0
    assert metrics["perception"] == 200.0 + 9 * 50.0
    assert metrics["cognition"] == 4 * 50.0
    assert outcome.results["count"] == 28
    assert prompts_of(predictor)["existence/0001.png#0"] == "<image>\nIs this a existence? Please answer yes or no."


@pytest.mark.skipif(shutil.which("java") is None, reason="CIDEr's PTBTokenizer needs Java")
def test_captions_are_scored_with_cider_over_the_whole_split(tmp_path):
    answers = {"1": "a red square on the left", "2": "a blue circle"}
    outcome, _ = evaluate(tmp_path, "coco-captions", answers)
    references = {"1": ["A red square on the left. ", "a small red box"], "2": ["a blue circle"]}
    expected = cider({k: [c.strip() for c in v] for k, v in references.items()}, answers).score * 100
    assert outcome.results["count"] == 2  # image 3 has no reference caption
    assert outcome.results["metrics"]["CIDEr"] == pytest.approx(expected, abs=1e-3)
    assert outcome.results["template"]["text"] == "<Image>Write a short description for the image."


@pytest.mark.parametrize("name", ["flickr30k", "nocaps"])
def test_other_caption_layouts_load(tmp_path, name):
    data, images, split = write_benchmark(name, tmp_path)
    spec = get_benchmark(name)
    samples = load_samples(spec, data, split or spec.default_split, images)
    assert samples and all(s.image.is_file() and s.target["captions"] for s in samples)


def test_unscored_split_writes_the_submission_file(tmp_path):
    write_vqav2_testdev(tmp_path / "data")
    config = EvalConfig("vqav2", tmp_path / "data", split="test-dev2015", out=tmp_path / "out", model="scripted")
    outcome = run_eval(ScriptedPredictor({"80": "A Dog", "81": "yes"}), config)
    assert outcome.results["metrics"] is None and "submission" in outcome.results["note"]
    rows = json.loads((outcome.run_dir / "submission.json").read_text())
    assert rows == [{"question_id": 80, "answer": "dog"}, {"question_id": 81, "answer": "yes"}]


# --- missing files ---------------------------------------------------------------------------------
def test_missing_annotation_file_is_named(tmp_path):
    data, _, split = write_benchmark("vqav2", tmp_path)
    (data / "v2_mscoco_toyval_annotations.json").unlink()
    with pytest.raises(MissingFilesError, match=r"v2_mscoco_toyval_annotations\.json") as info:
        load_samples(get_benchmark("vqav2"), data, split)
    assert info.value.missing == ["v2_mscoco_toyval_annotations.json"]


def test_cli_names_missing_files_before_loading_the_model(tmp_path):
    from typer.testing import CliRunner

    from lyrics.cli import app

    data, _, split = write_benchmark("okvqa", tmp_path / "data")
    (data / "mscoco_toyval_annotations.json").unlink()
    args = ["eval", "--model", str(tmp_path / "no-checkpoint"), "--benchmark", "okvqa", "--data", str(data), "--split", split]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "missing" in result.output and "mscoco_toyval_annotations.json" in result.output
    assert "checkpoint" not in result.output  # the model was never loaded


def test_missing_refcoco_instances_and_mme_subtasks_are_named(tmp_path):
    data, images, _ = write_benchmark("refcocog", tmp_path / "r")
    (data / "refcocog" / "instances.json").unlink()
    with pytest.raises(MissingFilesError, match=r"refcocog/instances\.json or instances\.json"):
        load_samples(get_benchmark("refcocog"), data, "test", images)
    write_benchmark("mme", tmp_path / "m")
    for name in ("OCR", "code_reasoning"):
        shutil.rmtree(tmp_path / "m" / name)
    with pytest.raises(MissingFilesError) as info:
        load_samples(get_benchmark("mme"), tmp_path / "m", "all")
    assert info.value.missing == ["OCR/", "code_reasoning/"]


def test_missing_images_are_listed_before_anything_runs(tmp_path):
    data, _, _ = write_benchmark("pope", tmp_path / "data")
    (data / "val2014" / "COCO_val2014_000000000042.jpg").unlink()
    predictor = ScriptedPredictor()
    with pytest.raises(MissingFilesError, match="COCO_val2014_000000000042.jpg"):
        run_eval(predictor, EvalConfig("pope", data, split="random", out=tmp_path / "out"))
    assert predictor.batches == []


def test_empty_split_is_an_error(tmp_path):
    data, images, _ = write_benchmark("refcoco", tmp_path)
    with pytest.raises(ValueError, match="no samples for split 'testA'"):
        load_samples(get_benchmark("refcoco"), data, "testA", images)


def test_limit_keeps_mme_pairs_whole(tmp_path):
    data, _, _ = write_benchmark("mme", tmp_path)
    samples = load_samples(get_benchmark("mme"), data, "all")
    assert [s.sample_id for s in apply_limit(samples, 3, whole_images=True)] == [s.sample_id for s in samples[:4]]
    assert len(apply_limit(samples, 3)) == 3


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_every_layout_loads_fills_its_template_and_gives_exemplar_answers(tmp_path, name):
    from lyrics.eval.benchmarks import exemplar_answer
    from lyrics.eval.runner import choose_template

    data, images, split = write_benchmark(name, tmp_path)
    spec = get_benchmark(name)
    samples = load_samples(spec, data, split or spec.default_split, images)
    template = choose_template(spec, None, samples[0])
    for sample in samples:
        assert sample.image.is_file(), sample.image
        prompt = template.fill(image=True, **sample.slots)
        assert prompt.startswith("<image>\n") and "{" not in prompt
        answer = exemplar_answer(spec, sample)
        assert isinstance(answer, str) and answer
    if spec.metric == "rec_accuracy":  # ann 900: (10, 20, 40, 60) px in 100 x 80
        assert exemplar_answer(spec, samples[0]) == "<Bbox>(100,250),(400,750)</Box>"
        assert exemplar_answer(spec, samples[0], "unit3") == "<Bbox>(0.100,0.250),(0.400,0.750)</Box>"
