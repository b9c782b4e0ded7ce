"""Stage-1 retrieval and matching (`lyrics.eval.retrieval`): the ranking metrics on known
similarities, chance, and a tiny trained stage-1 checkpoint scored end to end."""

import math

import pytest
import torch

import tiny
from lyrics.eval.retrieval import chance, evaluate_stage1, recall_at_k


def test_recall_of_a_perfect_a_constant_and_a_known_ranking():
    caption_image = torch.tensor([0, 0, 1, 1, 2, 2])
    perfect = (caption_image[None, :] == torch.arange(3)[:, None]).float()
    assert all(v == 100.0 for v in recall_at_k(perfect, caption_image, ks=(1,)).values())
    # ties count against the query: a constant similarity finds nothing at rank 1
    constant = torch.zeros(3, 6)
    assert recall_at_k(constant, caption_image, ks=(1,)) == {"i2t_R@1": 0.0, "t2i_R@1": 0.0}
    # image 0 ranks a caption of image 1 first and its own second; everything else is right
    sim = perfect.clone()
    sim[0, 2] = 2.0
    got = recall_at_k(sim, caption_image, ks=(1, 2))
    assert got["i2t_R@1"] == pytest.approx(200 / 3) and got["i2t_R@2"] == 100.0
    # caption 2 (image 1) now ranks image 0 first: 5 of 6 captions find their image at rank 1
    assert got["t2i_R@1"] == pytest.approx(500 / 6) and got["t2i_R@2"] == 100.0


def test_chance_of_sixty_images_with_five_captions_each():
    caption_image = torch.arange(60).repeat_interleave(5)
    base = chance(caption_image, ks=(1, 5))
    assert base["t2i_R@1"] == pytest.approx(100 / 60)
    assert base["i2t_R@1"] == pytest.approx(100 * 5 / 300)
    assert base["t2i_R@5"] == pytest.approx(500 / 60)
    assert base["i2t_R@5"] == pytest.approx(100 * (1 - math.comb(295, 5) / math.comb(300, 5)))
    assert base["itm_accuracy"] == 50.0


@pytest.fixture(scope="module")
def stage1_checkpoint(tmp_path_factory):
    from lyrics.recipes import run

    world = tiny.recipe_world(tmp_path_factory.mktemp("retrieval"))
    config = {
        "recipe": "stage1",
        "model": {"preset": "tiny", "overrides": {"refiner_config": {"tagger": "toy"}}, "mqformer_tokenizer": str(world / "mq_tokenizer"),
                  "vision_model": str(world / "vision")},
        "data": {"captions": str(world / "captions.json"), "images": str(world / "images"), "refiner_store": str(world / "store")},
        "trainer": {"output_dir": str(world / "run"), "max_steps": 2, "batch_size": 4, "log_every": 1, "save_every": 2, "progress": False},
    }  # fmt: skip
    return world, run(config)


def test_a_stage1_checkpoint_is_scored_with_chance_beside_every_metric(stage1_checkpoint):
    world, checkpoint = stage1_checkpoint
    results = evaluate_stage1(checkpoint, world / "captions.json", world / "images", refiner_store=world / "store", vision_model=world / "vision")
    assert set(results) == {f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)} | {"itm_accuracy"}
    for name, entry in results.items():
        assert 0.0 <= entry["value"] <= 100.0, name
    # 8 images with one caption each
    assert results["t2i_R@1"]["chance"] == pytest.approx(100 / 8)
    assert results["t2i_R@10"]["chance"] == 100.0 and results["t2i_R@10"]["value"] == 100.0
    again = evaluate_stage1(checkpoint, world / "captions.json", world / "images", refiner_store=world / "store", vision_model=world / "vision", limit=4)
    assert again["t2i_R@1"]["chance"] == pytest.approx(100 / 4)


def test_a_folder_that_is_not_stage1_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a stage-1 folder"):
        evaluate_stage1(tmp_path, tmp_path / "c.json", tmp_path)


def test_lyrics_eval_scores_retrieval_and_writes_its_results(stage1_checkpoint, tmp_path):
    import json

    from typer.testing import CliRunner

    from lyrics.cli import app

    world, checkpoint = stage1_checkpoint
    args = ["eval", "--model", str(checkpoint), "--benchmark", "retrieval", "--data", str(world / "captions.json"), "--images", str(world / "images"),
            "--refiner-store", str(world / "store"), "--vision-model", str(world / "vision"), "--out", str(tmp_path)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "t2i_R@1" in result.output and "chance" in result.output
    saved = json.loads((tmp_path / "retrieval-captions" / "results.json").read_text())
    assert saved["metrics"]["itm_accuracy"]["chance"] == 50.0
    missing = CliRunner().invoke(app, [*args[:6], str(tmp_path / "none.json"), *args[7:]])
    assert missing.exit_code != 0 and "none.json" in missing.output
