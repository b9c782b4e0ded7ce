import pytest

from lyrics.presets import load_config, parse_dotted, preset_names


def test_paper_preset_matches_the_paper():
    config = load_config("paper")
    assert config.vision_config.model_type == "clip_vision_model"
    assert (config.vision_config.image_size // config.vision_config.patch_size) ** 2 + 1 == 257
    assert config.mqformer_config.encoder_hidden_size == 1024
    mq = config.mqformer_config
    assert (mq.hidden_size, mq.num_hidden_layers, mq.num_query_tokens, mq.num_grounding_query_tokens) == (768, 12, 32, 32)
    assert mq.cross_attention_frequency == 2
    assert mq.local_feature_size == 256 + 4 + 256
    assert config.text_config.hidden_size == 5120 and config.text_config.num_hidden_layers == 40
    assert config.lora_target_modules == ["q_proj", "v_proj"]


def test_released_preset_matches_the_released_code():
    config = load_config("released")
    assert config.vision_config.model_type == "blip_2_vision_model"
    assert config.mqformer_config.encoder_hidden_size == 1408
    assert (config.mqformer_config.num_query_tokens, config.mqformer_config.num_grounding_query_tokens) == (32, 64)
    assert config.mqformer_config.local_feature_size == 260
    assert config.refiner_config.segmenter == "none"
    assert config.lora_r == 8 and config.lora_target_modules == ["q_proj", "k_proj", "v_proj"]
    assert config.train_mqformer is False


def test_every_preset_builds():
    assert preset_names() == ["paper", "released", "tiny"]
    for name in preset_names():
        assert load_config(name).num_image_tokens > 0


def test_yaml_file_and_dotted_overrides(tmp_path):
    override = tmp_path / "ablation.yaml"
    override.write_text("mqformer_config:\n  num_grounding_query_tokens: 0\nlora_r: 16\n")
    config = load_config("paper", override, ["refiner_config.coordinate_format=unit3", "lora_target_modules=[q_proj]"])
    assert config.mqformer_config.num_grounding_query_tokens == 0
    assert config.num_image_tokens == 32
    assert config.lora_r == 16
    assert config.refiner_config.coordinate_format == "unit3"
    assert config.lora_target_modules == ["q_proj"]


def test_misspelt_fields_fail_loudly(tmp_path):
    override = tmp_path / "typo.yaml"
    override.write_text("mqformer_config:\n  num_grounding_queries: 0\n")
    with pytest.raises(ValueError, match="typo.yaml: unknown mqformer_config field 'num_grounding_queries'"):
        load_config("paper", override)
    with pytest.raises(ValueError, match="unknown LyricsConfig field 'lora_rank'"):
        load_config("paper", dotted=["lora_rank=4"])
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("huge")


def test_saved_config_directory_is_a_preset(tmp_path):
    load_config("tiny", dotted=["lora_r=2"]).save_pretrained(tmp_path)
    assert load_config(tmp_path).lora_r == 2


def test_parse_dotted_types_values():
    assert parse_dotted(["a.b=1", "a.c=true", "d=x", "e=1e-3"]) == {"a": {"b": 1, "c": True}, "d": "x", "e": 0.001}
    with pytest.raises(ValueError, match="key=value"):
        parse_dotted(["oops"])
