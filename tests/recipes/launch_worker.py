"""One recipe run under a launcher, for the multi-process tests (`test_launchers.py`):

    accelerate launch --config_file configs/accelerate/X.yaml tests/recipes/launch_worker.py CONFIG.json RESULT.json [--resume]

Runs the recipe, then gathers the in-memory model (collective, as the recipe's own save does); the
main process writes its trainable weights to RESULT.safetensors, for the test to compare with the
checkpoint the recipe wrote, loaded back the way a user loads it (in a process of its own: inside a
ZeRO-3 run transformers would load it partitioned). RESULT.json: {"final", "losses",
"distributed_type", "processes"}.
"""

import json
import sys
from pathlib import Path

import torch


def main() -> None:
    config_path, result_path = sys.argv[1], Path(sys.argv[2])
    resume = "--resume" in sys.argv[3:]
    torch.set_num_threads(1)
    config = json.loads(Path(config_path).read_text())
    if config["recipe"] == "stage1":
        from lyrics.recipes.stage1 import Stage1Recipe as Recipe
    else:
        from lyrics.recipes.stage2 import Stage2Recipe as Recipe
    recipe = Recipe(config)
    try:
        recipe.setup()
        final = recipe.train(resume=resume)
        acc = recipe.trainer.accelerator
        memory = recipe.trainer.full_state_dict()
        if acc.is_main_process:
            from safetensors.torch import save_file

            trainable = recipe.trainer._trainable_names()
            save_file({k: memory[k].detach().float().contiguous() for k in sorted(trainable)}, str(result_path.with_suffix(".safetensors")))
            log = Path(config["trainer"]["output_dir"]) / "logs" / "train.jsonl"
            losses = [json.loads(line)["loss"] for line in log.read_text().splitlines()]
            result = {
                "final": str(final), "losses": losses,
                "distributed_type": str(acc.distributed_type), "processes": acc.num_processes,
            }  # fmt: skip
            result_path.write_text(json.dumps(result))
        acc.wait_for_everyone()
    finally:
        recipe.cleanup()


if __name__ == "__main__":
    main()
