"""Training recipes, torchtune style: one script per stage reading one YAML file.

    lyrics train configs/stage1/tiny.yaml --set trainer.max_steps=10
    torchrun --nproc_per_node 8 -m lyrics.recipes.stage1 configs/stage1/paper.yaml
    accelerate launch --config_file configs/accelerate/fsdp.yaml -m lyrics.recipes.stage2 configs/stage2/paper.yaml

A recipe YAML has a `recipe:` name (stage1 / stage2) and three typed sections: `model:` (preset, overrides,
where the pretrained parts come from), `data:` and `trainer:` (`lyrics.training.trainer.TrainerConfig`).
Every key can be overridden on the command line with `--set section.key=value`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from lyrics.presets import merge, parse_dotted

RECIPES = ("stage1", "stage2")
SECTIONS = ("recipe", "model", "data", "trainer")


def load_recipe_config(path: str | Path | dict[str, Any], overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a recipe YAML (or take a dict), apply `section.key=value` overrides, check the layout."""
    if isinstance(path, dict):
        config, origin = copy.deepcopy(path), "config"
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"recipe config {path} does not exist")
        config, origin = yaml.safe_load(path.read_text()) or {}, str(path)
    if not isinstance(config, dict):
        raise ValueError(f"{origin}: a recipe config is a mapping with sections {SECTIONS}")
    if overrides:
        config = merge(config, parse_dotted(overrides))
    unknown = set(config) - set(SECTIONS)
    if unknown:
        raise ValueError(f"{origin}: unknown section(s) {sorted(unknown)}; expected {SECTIONS}")
    if config.get("recipe") not in RECIPES:
        raise ValueError(f"{origin}: `recipe:` must be one of {RECIPES}, got {config.get('recipe')!r}")
    for section in ("model", "data", "trainer"):
        config.setdefault(section, {})
        if not isinstance(config[section], dict):
            raise ValueError(f"{origin}: section `{section}:` must be a mapping")
    return config


def run(config: dict[str, Any], resume: bool = False) -> Path:
    """Run the recipe named by `config["recipe"]`; returns the directory of the final model."""
    if config["recipe"] == "stage1":
        from lyrics.recipes.stage1 import Stage1Recipe as Recipe
    else:
        from lyrics.recipes.stage2 import Stage2Recipe as Recipe
    recipe = Recipe(config)
    try:
        recipe.setup()
        return recipe.train(resume=resume)
    finally:
        recipe.cleanup()


def main_for(recipe_name: str) -> None:
    """`python -m lyrics.recipes.<stage> CONFIG [--resume] [--set k=v ...]` (works under torchrun)."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m lyrics.recipes.{recipe_name}")
    parser.add_argument("config")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    config = load_recipe_config(args.config, args.overrides)
    if config["recipe"] != recipe_name:
        raise SystemExit(f"{args.config} is a `{config['recipe']}` recipe, not {recipe_name}")
    run(config, resume=args.resume)
