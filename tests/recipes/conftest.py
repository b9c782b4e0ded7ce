"""The tiny world both recipe test modules train on (`tiny.recipe_world`): 8 drawn images, COCO
captions, a toy-refiner store, and tiny CLIP / MQ-Former tokenizer / LLaMA checkpoints saved in their
real formats."""

import pytest

import tiny


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    return tiny.recipe_world(tmp_path_factory.mktemp("recipes"))
