"""Every shipped YAML loads: recipes through the recipe loader and their presets, accelerate files
as accelerate configs."""

from pathlib import Path

import pytest
import yaml

from lyrics.presets import PRESETS, load_config
from lyrics.recipes import load_recipe_config
from lyrics.training.trainer import TrainerConfig

ROOT = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(ROOT.glob("stage*/*.yaml"))
ACCELERATE = sorted((ROOT / "accelerate").glob("*.yaml"))


def test_configs_are_shipped():
    assert len(RECIPES) >= 4 and len(ACCELERATE) >= 3


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_config_loads(path):
    text = path.read_text()
    assert text.startswith("#") and ("lyrics train" in text or "-m lyrics.recipes" in text)  # the header says how to launch it
    config = load_recipe_config(path)
    assert config["recipe"] == path.parent.name
    TrainerConfig.from_dict(config["trainer"])
    preset = config["model"].get("preset", "paper")
    if preset in PRESETS:
        load_config(preset, config["model"].get("overrides") or {})


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_config_loads(path):
    data = yaml.safe_load(path.read_text())
    assert data["distributed_type"] in ("MULTI_GPU", "FSDP", "DEEPSPEED", "MULTI_CPU")
    from accelerate.commands.config.config_args import ClusterConfig

    unknown = set(data) - set(ClusterConfig.__dataclass_fields__)
    assert not unknown, f"{path.name}: keys accelerate does not know: {unknown}"
    config = ClusterConfig.from_yaml_file(str(path))  # what `accelerate launch --config_file` reads
    assert config.num_processes >= 2
