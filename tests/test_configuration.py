import json

import pytest

from lyrics.configuration import LyricsConfig, MQFormerConfig, RefinerConfig


def test_lyrics_config_round_trips_through_json(tmp_path):
    config = LyricsConfig(mqformer_config={"num_grounding_query_tokens": 8}, refiner_config={"segmenter": "sam"})
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["mqformer_config"]["num_grounding_query_tokens"] == 8
    loaded = LyricsConfig.from_pretrained(tmp_path)
    assert isinstance(loaded.mqformer_config, MQFormerConfig)
    assert isinstance(loaded.refiner_config, RefinerConfig)
    assert loaded.refiner_config.segmenter == "sam"
    assert loaded.mqformer_config.num_grounding_query_tokens == 8


def test_mqformer_widths_follow_the_frozen_parts():
    config = LyricsConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": 64, "num_attention_heads": 4},
        refiner_config={"detection_feature_size": 10, "box_feature_size": 4, "segmentation_feature_size": 6},
    )
    assert config.mqformer_config.encoder_hidden_size == 64
    assert config.mqformer_config.local_feature_size == 20
    assert config.num_image_tokens == 64


def test_sub_configs_load_on_their_own(tmp_path):
    MQFormerConfig(num_query_tokens=16).save_pretrained(tmp_path)
    assert MQFormerConfig.from_pretrained(tmp_path).num_query_tokens == 16


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: RefinerConfig(detector="yolo"), "RefinerConfig.detector must be one of"),
        (lambda: RefinerConfig(segmenter="none"), "segmentation_feature_size must be 0"),
        (lambda: MQFormerConfig(hidden_size=30, num_attention_heads=4), "multiple of num_attention_heads"),
        (lambda: MQFormerConfig(vocab_size=100), "outside the vocabulary"),
        (lambda: MQFormerConfig(grounding_query_init="zeros"), "grounding_query_init"),
    ],
)
def test_invalid_values_are_named(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_default_vocabulary_holds_bert_plus_the_added_tokens():
    config = MQFormerConfig()
    assert config.vocab_size == 30522 + 3 + 6
    assert (config.dec_token_id, config.bos_token_id, config.mlm_token_id) == (30522, 30523, 30524)
