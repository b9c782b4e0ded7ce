"""ImageEncoder.from_pretrained reads the vision tower out of CLIP and BLIP-2 folders faithfully."""

import pytest
import torch
from transformers import Blip2VisionModel, CLIPModel, CLIPVisionModel

import tiny
from lyrics.models.image_encoder import ImageEncoder
from refiner.tinymodels import save_clip


def assert_same_tower(loaded, reference):
    expected = reference.state_dict()
    actual = loaded.state_dict()
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("sharded", [False, True], ids=["one-file", "sharded"])
def test_blip2_folder_loads_the_vision_tower(tmp_path, sharded):
    # a saved Blip2ForConditionalGeneration stores the EVA tower under `vision_model.`
    saved = tiny.save_transformers_blip2("Blip2ForConditionalGeneration", tmp_path)
    if sharded:
        saved.save_pretrained(str(tmp_path / "sharded"), max_shard_size="20KB")
        assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    encoder = ImageEncoder.from_pretrained(str(tmp_path / "sharded" if sharded else tmp_path))
    assert type(encoder.vision_model) is Blip2VisionModel
    assert encoder.num_features == tiny.TINY_VISION["hidden_size"]
    assert_same_tower(encoder.vision_model, saved.vision_model)
    pixels = torch.randn(2, 3, 30, 30, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = saved.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        torch.testing.assert_close(encoder(pixels), expected)


@pytest.mark.parametrize("whole", [True, False], ids=["CLIPModel", "CLIPVisionModel"])
def test_clip_folder_loads_the_vision_tower(tmp_path, whole):
    # a whole CLIP checkpoint stores the tower under `vision_model.`; its text tower is left unused
    save_clip(tmp_path)
    clip = CLIPModel.from_pretrained(str(tmp_path))
    if not whole:
        clip.vision_model.save_pretrained(str(tmp_path / "tower"))
    encoder = ImageEncoder.from_pretrained(str(tmp_path if whole else tmp_path / "tower"), feature_layer=-1)
    assert type(encoder.vision_model) is CLIPVisionModel
    assert_same_tower(encoder.vision_model, clip.vision_model)
