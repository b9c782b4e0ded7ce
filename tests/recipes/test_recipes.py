"""Both recipes end to end on tiny models: refine -> stage 1 -> convert -> stage 2 -> merge, through
the same commands a user runs (`lyrics refine` API, `lyrics train`, `lyrics merge`)."""

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lyrics.cli import app


def write(path, data):
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


def test_stage1_then_stage2_then_merge(world, tmp_path):
    runner = CliRunner()
    tiny_refiner = {"tagger": "toy"}
    stage1 = write(tmp_path / "stage1.yaml", {
        "recipe": "stage1",
        "model": {"preset": "tiny", "overrides": {"refiner_config": tiny_refiner}, "mqformer_tokenizer": str(world / "mq_tokenizer"),
                  "vision_model": str(world / "vision")},
        "data": {"captions": str(world / "captions.json"), "images": str(world / "images"), "refiner_store": str(world / "store"),
                 "augment": {"enabled": True, "size": 32}},
        "trainer": {"output_dir": str(tmp_path / "run1"), "max_steps": 2, "batch_size": 4, "log_every": 1, "save_every": 2, "progress": False},
    })  # fmt: skip
    result = runner.invoke(app, ["train", str(stage1)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    log = [json.loads(line) for line in (tmp_path / "run1" / "logs" / "train.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert all(k in log[-1] for k in ("loss_itc", "loss_itm", "loss_icg", "loss_msp"))
    final1 = tmp_path / "run1" / "final"
    assert (final1 / "model.safetensors").is_file() and (final1 / "mqformer_tokenizer" / "tokenizer_config.json").is_file()

    result = runner.invoke(app, ["convert", "coco-captions", str(world / "captions.json"), "--images", str(world / "images"), "--out", str(tmp_path / "records.json")])
    assert result.exit_code == 0, result.output

    stage2 = write(tmp_path / "stage2.yaml", {
        "recipe": "stage2",
        "model": {"preset": str(final1), "text_model": str(world / "llm"), "vision_model": str(world / "vision"), "stage1": str(final1)},
        "data": {"records": str(tmp_path / "records.json"), "images": str(world / "images"), "refiner_store": str(world / "store"), "group_by_length": True},
        "trainer": {"output_dir": str(tmp_path / "run2"), "max_steps": 2, "batch_size": 2, "log_every": 1, "save_every": 0, "progress": False},
    })  # fmt: skip
    result = runner.invoke(app, ["train", str(stage2), "--set", "trainer.lr=1e-3", "--set", "model.loss_reduction=sample"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    final2 = tmp_path / "run2" / "final"

    from lyrics.models.conditional_generation import LyricsForConditionalGeneration
    from lyrics.models.processing import LyricsProcessor
    from lyrics.refiner.store import open_store

    model = LyricsForConditionalGeneration.from_pretrained(final2)
    proc = LyricsProcessor.from_pretrained(final2)
    # the stage-1 MQ-Former went into stage 2 and trained on
    from safetensors.torch import load_file

    stage1_queries = load_file(str(final1 / "model.safetensors"))["mqformer.query_tokens"]
    assert stage1_queries.shape == model.mqformer.query_tokens.shape
    assert not torch.equal(stage1_queries, model.mqformer.query_tokens)

    record = open_store(world / "store").get("000.png")
    conv = [{"from": "human", "value": "<image>\nWrite a short description for the image."}]
    batch = proc.generation_batch([conv])
    visual = dict(pixel_values=proc.pixel_values([Image.open(world / "images" / "000.png").convert("RGB")]),
                  local_features=record.local_features[None].float())  # fmt: skip
    out = model.generate(**batch, **visual, max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 1

    result = runner.invoke(app, ["merge", str(final2), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    merged = LyricsForConditionalGeneration.from_pretrained(tmp_path / "merged")
    full = proc.training_batch([conv + [{"from": "gpt", "value": "a red circle"}]])
    torch.testing.assert_close(merged(**full, **visual).logits, model(**full, **visual).logits, rtol=1e-5, atol=1e-5)


def test_per_sample_loss_weighs_each_sample_alike():
    from lyrics.models.conditional_generation import response_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.full((2, 5), -100)
    labels[0, 4] = 3  # one response token
    labels[1, 1:4] = torch.tensor([1, 2, 5])  # three
    ce = -logits.log_softmax(-1)
    first = ce[0, 3, 3]
    second = (ce[1, 0, 1] + ce[1, 1, 2] + ce[1, 2, 5]) / 3

    def loss(reduction):
        predicts = labels[:, 1:] != -100
        return response_loss(logits[:, :-1][predicts], labels[:, 1:][predicts], predicts, reduction).item()

    assert loss("sample") == pytest.approx(((first + second) / 2).item(), rel=1e-6)
    assert loss("token") == pytest.approx(((first + 3 * second) / 4).item(), rel=1e-6)
    labels[1] = -100  # a sample without a response does not count
    assert loss("sample") == pytest.approx(first.item(), rel=1e-6)
    labels[0] = -100  # nor does a batch without any: zero, not NaN
    assert loss("sample") == 0.0 and loss("token") == 0.0
    with pytest.raises(ValueError, match="'token' or 'sample', got 'mean'"):
        loss("mean")


def test_unknown_loss_reduction_is_named_before_the_llm_loads(tmp_path):
    from lyrics.recipes.stage2 import Stage2Recipe

    recipe = Stage2Recipe({
        "recipe": "stage2", "trainer": {"output_dir": str(tmp_path)},
        "model": {"preset": "tiny", "text_model": str(tmp_path / "absent"), "vision_model": str(tmp_path / "absent"), "loss_reduction": "mean"},
    })  # fmt: skip
    with pytest.raises(ValueError, match="model.loss_reduction must be 'token' or 'sample', got 'mean'"):
        recipe._setup_model()


def test_bad_recipe_configs_are_named(tmp_path):
    runner = CliRunner()
    bad = write(tmp_path / "bad.yaml", {"recipe": "stage3"})
    result = runner.invoke(app, ["train", str(bad)])
    assert result.exit_code == 2 and "must be one of" in result.output
    typo = write(tmp_path / "typo.yaml", {"recipe": "stage1", "trainers": {}})
    assert "unknown section" in runner.invoke(app, ["train", str(typo)]).output


def test_recipes_build_the_same_model_for_the_same_seed(world):
    """Fresh parameters come from the trainer seed, not from whatever the global RNG holds."""
    from lyrics.recipes.stage1 import Stage1Recipe
    from lyrics.recipes.stage2 import Stage2Recipe

    trainer = {"output_dir": "unused", "max_steps": 1, "seed": 3}
    stage1 = {
        "recipe": "stage1", "trainer": trainer,
        "model": {"preset": "tiny", "mqformer_tokenizer": str(world / "mq_tokenizer"), "vision_model": str(world / "vision")},
        "data": {"captions": str(world / "captions.json"), "images": str(world / "images")},
    }  # fmt: skip
    stage2 = {
        "recipe": "stage2", "trainer": trainer,
        "model": {"preset": "tiny", "text_model": str(world / "llm"), "vision_model": str(world / "vision")},
        "data": {},
    }  # fmt: skip
    for recipe, config in ((Stage1Recipe, stage1), (Stage2Recipe, stage2)):
        states = []
        for noise in (1, 2):
            torch.manual_seed(noise)
            built = recipe(config)
            built._setup_model()
            states.append({k: v.clone() for k, v in built.model.state_dict().items()})
        assert states[0].keys() == states[1].keys()
        assert all(torch.equal(states[0][k], states[1][k]) for k in states[0]), recipe.__name__


def test_prompt_lengths_count_the_conversation_and_the_spatial_text_in_the_prompt(tmp_path):
    from types import SimpleNamespace

    from lyrics.data.records import InstructionRecord
    from lyrics.recipes.stage2 import prompt_lengths

    conv = [{"from": "human", "value": "<image>\nq?"}, {"from": "gpt", "value": "yes"}]
    part = SimpleNamespace(records=[InstructionRecord("a", "a.jpg", "vqa", conv, refiner="a"), InstructionRecord("b", "b.jpg", "vqa", conv)])
    store = SimpleNamespace(spatial_text=lambda key: {"a": "x" * 40}[key])  # "b.jpg" is not in it
    assert prompt_lengths([part], store, True) == [len("<image>\nq?yes") + 40, len("<image>\nq?yes")]
    assert prompt_lengths([part], store, False) == [len("<image>\nq?yes")] * 2


def test_misspelt_model_and_data_keys_are_named(tmp_path):
    from lyrics.recipes.stage1 import Stage1Recipe
    from lyrics.recipes.stage2 import Stage2Recipe

    trainer = {"output_dir": str(tmp_path)}
    with pytest.raises(ValueError, match=r"section `model:`: 'stage_1' \(did you mean 'stage1'\?\)"):
        Stage2Recipe({"recipe": "stage2", "trainer": trainer, "model": {"stage_1": "runs/stage1/final"}})
    with pytest.raises(ValueError, match=r"section `data:`: 'caption' \(did you mean 'captions'\?\)"):
        Stage1Recipe({"recipe": "stage1", "trainer": trainer, "data": {"caption": "c.json"}})
    with pytest.raises(ValueError, match=r"`data.max_caption_tokens` must be int, got str"):
        Stage1Recipe({"recipe": "stage1", "trainer": trainer, "data": {"max_caption_tokens": "32"}})
    recipe = Stage2Recipe({"recipe": "stage2", "trainer": trainer, "model": {"stage1": "s1", "max_length": 256}})
    assert recipe.model_config.stage1 == "s1" and recipe.model_config.max_length == 256
    assert recipe.model_config.loss_reduction == "token"  # the documented default


def test_every_shipped_recipe_config_parses_into_typed_sections():
    from pathlib import Path

    from lyrics.recipes import load_recipe_config
    from lyrics.recipes.stage1 import Stage1Recipe
    from lyrics.recipes.stage2 import Stage2Recipe

    configs = sorted(Path(__file__).resolve().parents[2].glob("configs/stage*/*.yaml"))
    assert len(configs) >= 4
    for path in configs:
        config = load_recipe_config(path)
        recipe = (Stage1Recipe if config["recipe"] == "stage1" else Stage2Recipe)(config)
        assert recipe.model_config.preset, path


def test_stage2_trains_every_trainable_parameter_each_step(world):
    """Data-parallel engines wait for a gradient of every trainable parameter: the MQ-Former parts
    stage 2 never reads (LM head, text-only embeddings and FFNs) are frozen, with and without the
    instruction-aware queries."""
    from lyrics.recipes.stage2 import Stage2Collator, Stage2Recipe

    for instruction_aware in (False, True):
        overrides = {"train_mqformer": True, "instruction_aware": instruction_aware}
        model = {"preset": "tiny", "overrides": overrides, "text_model": str(world / "llm"), "vision_model": str(world / "vision"),
                 "mqformer_tokenizer": str(world / "mq_tokenizer")}  # fmt: skip
        recipe = Stage2Recipe({"recipe": "stage2", "trainer": {"output_dir": "unused"}, "model": model, "data": {}})
        recipe._setup_model()
        from lyrics.refiner.store import open_store

        record = open_store(world / "store").get("000.png")
        conv = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "a red circle"}]
        image = recipe.processor.pixel_values([Image.open(world / "images" / "000.png").convert("RGB")])[0]
        batch = Stage2Collator(recipe.processor)([{"conversations": conv, "refiner": record, "image": image}] * 2)
        recipe.step_fn(recipe.model, batch).loss.backward()
        trainable = {n: p for n, p in recipe.model.named_parameters() if p.requires_grad}
        assert any(n.startswith("mqformer.") for n in trainable) and any("lora_" in n for n in trainable)
        assert not any(n.startswith("mqformer.lm_head.") for n in trainable)
        assert [n for n, p in trainable.items() if p.grad is None] == [], instruction_aware
