"""`lyrics` command line. Each command is a thin typed function that dispatches into the library;
heavy imports (torch, transformers) happen inside the commands so `lyrics --help` stays fast.

Length: one short function per command (about twenty of them), kept in one file so that every
command a user can type is found in one place. A command parses its flags, calls the library, and
prints what the library renders (tables and summaries live beside the code they describe). Flags
whose defaults belong to a typed config (`ServerLimits`, `RefinerConfig`, the eval runner's
`EvalConfig`, `JudgeConfig`, `EndpointConfig`) are checked against it by tests/test_cli.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

app = typer.Typer(
    name="lyrics",
    help="Lyrics: fine-grained vision-language alignment with semantic-aware visual objects.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

PresetOption = Annotated[
    str, typer.Option("--preset", "-p", help="Model preset: paper, released or tiny; or a saved config directory.")
]
ConfigOption = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="YAML file overriding any config field.")
]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Dotted override, e.g. mqformer_config.num_grounding_query_tokens=0 (repeatable)."),
]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _load(preset: str, config: Path | None, overrides: list[str] | None):
    from lyrics.presets import load_config

    try:
        return load_config(preset, config, overrides)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))


@app.command()
def config(
    preset: PresetOption = "paper",
    config: ConfigOption = None,
    overrides: SetOption = None,
    out: Annotated[Optional[Path], typer.Option(help="Directory to save config.json into.")] = None,
) -> None:
    """Print (or save) the full configuration of a preset after overrides."""
    cfg = _load(preset, config, overrides)
    if out is not None:
        cfg.save_pretrained(str(out))
        typer.echo(f"saved {out / 'config.json'}")
    else:
        typer.echo(cfg.to_json_string())


@app.command()
def audit(
    preset: PresetOption = "paper",
    config: ConfigOption = None,
    overrides: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    flops: Annotated[bool, typer.Option("--flops", help="Instead of parameters: training FLOPs per sample and per step of each stage (meta device) and the GPU-hours of the paper's schedule.")] = False,
    mfu: Annotated[float, typer.Option("--mfu", help="With --flops: model FLOPs utilisation assumed for the GPU-hours.")] = 0.4,
    peak_tflops: Annotated[float, typer.Option("--peak-tflops", help="With --flops: peak TFLOP/s of one GPU (A100 dense bf16: 312).")] = 312.0,
    gpus: Annotated[int, typer.Option("--gpus", help="With --flops: GPUs the wall-clock hours are spread over (the paper's 16).")] = 16,
    llm_tokens: Annotated[int, typer.Option("--llm-tokens", help="With --flops: stage-2 LLM tokens per sample, visual tokens included.")] = 512,
) -> None:
    """Count the parameters of a full-size model on the meta device and compare with the paper; with
    --flops, count the training FLOPs of both stages and the GPU-hours of the paper's schedule."""
    from lyrics.audit import PAPER_FIGURES, audit as run_audit, audit_json, audit_table

    cfg = _load(preset, config, overrides)
    if flops:
        from lyrics.audit import Workload, cost_json, cost_text, training_cost

        if not 0 < mfu <= 1 or peak_tflops <= 0 or gpus < 1 or llm_tokens < 1:
            _fail("--mfu must be in (0, 1], --peak-tflops, --gpus and --llm-tokens positive")
        workload = Workload(llm_tokens=llm_tokens).fitted(cfg)
        report = cost_json(training_cost(cfg, workload), workload, mfu, peak_tflops, gpus)
        typer.echo(json.dumps(dict(report, preset=preset), indent=2) if as_json else cost_text(report, f"{preset} preset, the paper's schedule"))
        return
    rows = run_audit(cfg, PAPER_FIGURES if preset == "paper" else None)
    if as_json:
        typer.echo(json.dumps(audit_json(rows), indent=2))
        return
    from rich.console import Console

    Console().print(audit_table(rows, preset))


@app.command("import-blip2")
def import_blip2(
    checkpoint: Annotated[Path, typer.Argument(help="transformers BLIP-2/InstructBLIP directory, or a LAVIS / released-code state-dict file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the initialised MQ-Former.")],
    preset: PresetOption = "paper",
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Initialise an MQ-Former from BLIP-2 weights, save it, and print the load report."""
    from lyrics.models.blip2_weights import CheckpointError, load_mqformer_from_blip2
    from lyrics.models.mqformer import MQFormerModel

    cfg = _load(preset, config, overrides)
    model = MQFormerModel(cfg.mqformer_config)
    try:
        report = load_mqformer_from_blip2(model, checkpoint)
    except CheckpointError as exc:
        _fail(str(exc))
    model.save_pretrained(str(out))
    (out / "load_report.json").write_text(json.dumps(report.to_dict(), indent=2))
    typer.echo(report.summary())
    typer.echo(f"saved MQ-Former to {out} (full report in {out / 'load_report.json'})")


@app.command("convert")
def convert_command(
    kind: Annotated[str, typer.Argument(help="Source format: coco-captions, karpathy, vqav2, okvqa, aokvqa, aokvqa-mc, gqa, textvqa, vizwiz, ocrvqa, scienceqa, refcoco, refcoco-rec, refcoco-gc, shikra-rd, alpaca, llava.")],
    inputs: Annotated[list[Path], typer.Argument(help="Annotation file(s) or folder in the official layout (vqav2/okvqa: questions then annotations).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output records (.json list or .jsonl), written atomically.")],
    images: Annotated[Optional[Path], typer.Option("--images", help="Image root of the official layout; record image paths are relative to it.")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Keep only this split (formats that have one).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the per-sample Table 10 template choice.")] = 0,
    coordinate_format: Annotated[Optional[str], typer.Option("--coordinate-format", help="Write literal coordinates (int1000 or unit3) instead of <box:i> placeholders.")] = None,
    template: Annotated[Optional[int], typer.Option("--template", help="Use this template index of each task for every sample.")] = None,
    templates: Annotated[Optional[Path], typer.Option("--templates", help="JSON/YAML template file replacing Table 10.")] = None,
    max_turns: Annotated[int, typer.Option("--max-turns", min=1, help="Merge up to N single-turn questions of one image into one multi-turn conversation (VQA-style sources; LLaVA-1.5 does this).")] = 1,
) -> None:
    """Convert an official dataset format into instruction records (LLaVA-style JSON with boxes)."""
    from lyrics.data.convert import convert_to_file
    from lyrics.data.official.common import FormatError

    try:
        result = convert_to_file(
            kind, inputs, out, images=images, split=split, seed=seed, template=template,
            coordinate_format=coordinate_format, templates=templates, max_turns=max_turns,
        )
    except (ValueError, FileNotFoundError, IndexError, KeyError, FormatError) as exc:
        _fail(str(exc))
    for line in result.skipped[:20]:
        typer.echo(f"skipped: {line}", err=True)
    if len(result.skipped) > 20:
        typer.echo(f"skipped: ... and {len(result.skipped) - 20} more", err=True)
    typer.echo(f"wrote {len(result.records)} records to {out} ({len(result.skipped)} skipped)")


# `lyrics refine` flags that set a `RefinerConfig` field (flag -> field). They default to None, so the
# config (preset, --config, --set) decides; tests/test_cli.py checks both facts.
REFINE_FLAGS = {
    "vocabulary": "tag_vocabulary", "batch_size": "batch_size", "shard_size": "shard_size", "store_format": "store_format",
    "max_objects": "max_objects", "box_threshold": "box_threshold", "text_threshold": "text_threshold",
    "tag_threshold": "tag_threshold", "nms_iou": "nms_iou",
}  # fmt: skip


@app.command("refine")
def refine_command(
    source: Annotated[Path, typer.Argument(metavar="INPUT", help="A folder of images, a text file with one image path per line, or a .jsonl/.json manifest of objects with 'image' (path), optional 'id' and optional 'tags' (list of strings).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Feature store directory (created; an interrupted run resumes in it).")],
    preset: PresetOption = "paper",
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file overriding RefinerConfig fields (bare or under refiner_config:).")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="RefinerConfig override, e.g. box_threshold=0.3 or refiner_config.nms_iou=0.5 (repeatable).")] = None,
    backend: Annotated[Optional[list[str]], typer.Option("--backend", "-b", help="Stage backend STAGE=NAME: tagger=clip|ram|given|toy, detector=grounding_dino|toy, segmenter=sam_hq|sam|toy|none; or 'toy' for all three (repeatable). A changed backend loads its default model (tagger=clip: openai/clip-vit-large-patch14) unless --set STAGE_model=... names one; tagger=ram needs --set tagger_model=PATH of a RAM++ .pth file (docs/refiner.md).")] = None,
    vocabulary: Annotated[Optional[Path], typer.Option("--vocabulary", help="Tag vocabulary for the CLIP tagger: one tag per line, optional <TAB>threshold.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per forward pass (default: RefinerConfig.batch_size).")] = None,
    shard: Annotated[str, typer.Option("--shard", help="i/n: process only shards s with s % n == i, so n ranks or machines split the input.")] = "0/1",
    shard_size: Annotated[Optional[int], typer.Option("--shard-size", min=1, help="Images per store shard, the unit of atomic writing and restart.")] = None,
    store_format: Annotated[Optional[str], typer.Option("--format", help="Store shards: safetensors or webdataset (tar).")] = None,
    visualize: Annotated[Optional[Path], typer.Option("--visualize", help="Directory for PNGs with masks, boxes and tags drawn on each image.")] = None,
    max_objects: Annotated[Optional[int], typer.Option("--max-objects", min=1, help="Keep the top-K objects by score (K of the local features).")] = None,
    box_threshold: Annotated[Optional[float], typer.Option("--box-threshold", help="Detector box score threshold.")] = None,
    text_threshold: Annotated[Optional[float], typer.Option("--text-threshold", help="Grounding-DINO phrase score threshold.")] = None,
    tag_threshold: Annotated[Optional[float], typer.Option("--tag-threshold", help="Default tagger threshold (per-tag thresholds in the vocabulary win).")] = None,
    nms_iou: Annotated[Optional[float], typer.Option("--nms-iou", help="IoU above which NMS drops the lower-scored box.")] = None,
    image_root: Annotated[Optional[Path], typer.Option("--image-root", help="Folder that relative paths in a list or manifest are relative to (default: its folder).")] = None,
    device: Annotated[str, typer.Option("--device", help="Torch device for the models, e.g. cpu or cuda:0.")] = "cpu",
    workers: Annotated[int, typer.Option("--workers", min=1, help="Threads decoding images ahead of the models.")] = 2,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Run the visual refiner (tagger -> detector -> segmenter) over a dataset into a sharded feature
    store; bad images go to OUT/errors.jsonl, and rerunning the same command resumes."""
    flags = dict(locals())
    from lyrics.distributed import parse_shard
    from lyrics.refiner.job import load_refiner_config, run_job
    from lyrics.refiner.stages import BackendError
    from lyrics.refiner.store import StoreError

    dotted = list(overrides or []) + [f"{field}={flags[flag]}" for flag, field in REFINE_FLAGS.items() if flags[flag] is not None]
    try:
        rank, world = parse_shard(shard)
        cfg = load_refiner_config(preset, config, dotted, backend)
        summary = run_job(
            source, out, cfg, rank=rank, world=world, device=device, image_root=image_root,
            visualize=visualize, progress=progress, workers=workers,
        )
    except (ValueError, FileNotFoundError, BackendError, StoreError) as exc:
        _fail(str(exc))
    typer.echo(summary.describe())


@app.command("train")
def train_command(
    config: Annotated[Path, typer.Argument(help="Recipe YAML (configs/stage1/*.yaml or configs/stage2/*.yaml).")],
    overrides: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override, e.g. trainer.max_steps=100 (repeatable).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest complete checkpoint in trainer.output_dir.")] = False,
) -> None:
    """Train stage 1 (MQ-Former pre-training) or stage 2 (instruction tuning with LoRA) from a recipe YAML.

    Multi-GPU: `torchrun --nproc_per_node N -m lyrics.recipes.stage1 CONFIG`, or
    `accelerate launch --config_file configs/accelerate/fsdp.yaml -m lyrics.recipes.stage2 CONFIG`."""
    from lyrics.recipes import load_recipe_config, run

    try:
        recipe = load_recipe_config(config, overrides)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    final = run(recipe, resume=resume)
    typer.echo(f"final model: {final}")


@app.command("merge")
def merge_command(
    checkpoint: Annotated[Path, typer.Argument(help="A stage-2 checkpoint (config.json, lyrics_model.safetensors, adapter/).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the standalone merged model.")],
) -> None:
    """Fold the LoRA adapter into the LLM and write a standalone model (LLM and image encoder included)."""
    from lyrics.models.conditional_generation import LyricsForConditionalGeneration
    from lyrics.models.processing import LyricsProcessor

    try:
        model = LyricsForConditionalGeneration.from_pretrained(checkpoint)
        processor = LyricsProcessor.from_pretrained(checkpoint) if (checkpoint / "processor_config.json").is_file() else None
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    model.save_merged(out, processor=processor)
    typer.echo(f"merged model written to {out}")


# --- inference surfaces (lyrics.inference): chat, serve, demo-ui --------------------------------------
ModelOption = Annotated[Path, typer.Option("--model", "-m", help="A stage-2 checkpoint directory (save_pretrained or lyrics merge).")]
DeviceOption = Annotated[str, typer.Option("--device", help="Torch device, e.g. cpu or cuda:0.")]
DtypeOption = Annotated[Optional[str], typer.Option("--dtype", help="LLM dtype: float32, bfloat16 or float16 (default: the checkpoint's).")]
# The choices are lyrics.inference.quantize.METHODS (a test checks), written here to keep torch out of `--help`.
QuantizeOption = Annotated[
    Literal["none", "int8", "nf4"],
    typer.Option(
        "--quantize",
        help="Store the LLM's weights in 8 or 4 bits after merging LoRA: int8 (torchao weight-only, CPU and CUDA) or "
        "nf4 (bitsandbytes, CUDA only). See docs/serving.md.",
    ),
]  # fmt: skip
RefinerOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--refiner", metavar="FIELD=VALUE",
        help="RefinerConfig field of the live refiner, e.g. tagger_model=/models/ram_plus_swin_large_14m.pth (repeatable). "
        "By default the refiner recorded in the checkpoint (the one that made its training features) runs; for such a "
        "checkpoint only moved model paths and runtime fields may differ from the record, anything else is refused.",
    ),
]  # fmt: skip


def _refiner_options(items: list[str] | None) -> dict:
    from lyrics.refiner.provenance import parse_refiner_options

    try:
        return parse_refiner_options(items)
    except ValueError as exc:
        _fail(str(exc))


@app.command("chat")
def chat_command(
    model: ModelOption,
    image: Annotated[Optional[Path], typer.Option("--image", "-i", help="Image to talk about.")] = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="Ask once and exit; without it, an interactive multi-turn chat.")] = None,
    save_vis: Annotated[Optional[Path], typer.Option("--save-vis", help="PNG with the refiner's objects and the answer's boxes drawn.")] = None,
    region: Annotated[Optional[list[str]], typer.Option("--region", help="Box x1,y1,x2,y2 for the next <region> of the prompt (repeatable, in order); a prompt without <region> gets one per box.")] = None,
    region_format: Annotated[str, typer.Option("--region-format", help="Units of --region: pixels, 0-1 or 0-1000.")] = "pixels",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Answer length limit.")] = 128,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="0 = greedy (the paper's decoding).")] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0)] = 1.0,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = None,
    refiner: RefinerOption = None,
    quantize: QuantizeOption = "none",
) -> None:
    """Chat with a checkpoint in the terminal (the checkpoint's refiner runs live on the image)."""
    from lyrics.inference.chat import run_chat
    from lyrics.inference.inputs import InputError
    from lyrics.refiner.stages import BackendError

    fields = _refiner_options(refiner)
    try:
        run_chat(
            model, image, prompt, save_vis, region, device=device, dtype=dtype, refiner=fields, quantize=quantize, region_format=region_format,
            max_new_tokens=max_new_tokens, do_sample=temperature > 0, temperature=temperature or 1.0, top_p=top_p,
        )  # fmt: skip
    except (InputError, ValueError, FileNotFoundError, BackendError) as exc:
        _fail(str(exc))


@app.command("serve")
def serve_command(
    model: ModelOption,
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    model_name: Annotated[Optional[str], typer.Option("--model-name", help="Model id clients send (default: the checkpoint folder's name).")] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="LYRICS_API_KEY", help="Require 'Authorization: Bearer KEY'.")] = None,
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", min=1, help="Requests merged into one model call (1 = no dynamic batching).")] = 8,
    batch_window_ms: Annotated[float, typer.Option("--batch-window-ms", min=0.0, help="How long to wait for more requests to batch.")] = 10.0,
    max_concurrent: Annotated[int, typer.Option("--max-concurrent", min=1, help="Requests queued or running; more get 429.")] = 64,
    queue_timeout: Annotated[float, typer.Option("--queue-timeout", min=0.1, help="Seconds a request may wait in the queue before 503.")] = 120.0,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Cap on a request's max_tokens (above: 400).")] = 512,
    default_max_tokens: Annotated[int, typer.Option("--default-max-tokens", min=1, help="max_tokens when a request gives none.")] = 128,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", min=0.001, help="Largest request body (413 above).")] = 20.0,
    max_image_mb: Annotated[float, typer.Option("--max-image-mb", min=0.001, help="Largest encoded image.")] = 10.0,
    max_image_pixels: Annotated[int, typer.Option("--max-image-pixels", min=1, help="Largest image width x height.")] = 4096 * 4096,
    max_aspect_ratio: Annotated[float, typer.Option("--max-aspect-ratio", min=1.0, help="Longest / shortest image side (400 above; at most the pipeline's 20).")] = 20.0,
    max_json_depth: Annotated[int, typer.Option("--max-json-depth", min=6, help="Deepest nesting of a request body (400 above).")] = 32,
    max_messages: Annotated[int, typer.Option("--max-messages", min=1, help="Messages per request (400 above).")] = 64,
    max_text_chars: Annotated[int, typer.Option("--max-text-chars", min=1, help="Characters of text per request, all messages together (400 above).")] = 32_000,
    body_timeout: Annotated[float, typer.Option("--body-timeout", min=0.1, help="Seconds a request body may take to arrive (408 after).")] = 60.0,
    allow_remote_urls: Annotated[bool, typer.Option("--allow-remote-urls", help="Fetch http(s) image URLs (default: data: URLs only).")] = False,
    allow_local_files: Annotated[bool, typer.Option("--allow-local-files", help="Read file:// URLs and paths on this machine.")] = False,
    remote_timeout: Annotated[float, typer.Option("--remote-timeout", min=0.1, help="Seconds to fetch a remote image (with --allow-remote-urls).")] = 10.0,
    default_temperature: Annotated[float, typer.Option("--default-temperature", min=0.0, help="Temperature when a request gives none (0 = greedy).")] = 0.0,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="torch CPU threads.")] = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
    refiner: RefinerOption = None,
    quantize: QuantizeOption = "none",
) -> None:
    """OpenAI-compatible HTTP server: POST /v1/chat/completions (streaming, images as data URLs), GET /v1/models, GET /health."""
    flags = dict(locals())  # the limits' flags (their defaults are ServerLimits', checked by tests/test_cli.py)
    from lyrics.inference.limits import ServerLimits
    from lyrics.inference.server import serve
    from lyrics.refiner.stages import BackendError

    fields = _refiner_options(refiner)

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        limits = ServerLimits.from_cli(flags)
        serve(str(model), host, port, model_name, limits, api_key, device, dtype, default_temperature, log_level, refiner=fields, quantize=quantize)
    except (ValueError, FileNotFoundError, BackendError) as exc:
        _fail(str(exc))


@app.command("demo-ui")
def demo_ui_command(
    model: ModelOption,
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 7860,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Upper end of the answer-length slider.")] = 128,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = None,
) -> None:
    """Web demo (gradio): upload an image, chat, see the refiner's tags and boxes and the answer's boxes drawn."""
    from lyrics.inference.webui import launch
    from lyrics.refiner.stages import BackendError

    try:
        launch(model, host, port, device, dtype, max_new_tokens)
    except (ValueError, FileNotFoundError, BackendError) as exc:
        _fail(str(exc))


@app.command("toyworld")
def toyworld_command(
    out: Annotated[Path, typer.Argument(help="Directory for the world (created; an identical world there is reused).")],
    seed: Annotated[int, typer.Option(help="World seed: the same seed and sizes give byte-identical files.")] = 0,
    train: Annotated[Optional[int], typer.Option(help="Train images (default 2000, --fast 400).")] = None,
    val: Annotated[Optional[int], typer.Option(help="Val images (default 200).")] = None,
    test: Annotated[Optional[int], typer.Option(help="Test images (default 300).")] = None,
    zeroshot: Annotated[Optional[int], typer.Option(help="Zero-shot images (default 200).")] = None,
    fast: Annotated[bool, typer.Option("--fast", help="Small sizes and stand-in budgets (quickstart --fast).")] = False,
    standins: Annotated[Optional[Path], typer.Option(help="Also train the CLIP / tokenizer stand-ins into this directory.")] = None,
    workers: Annotated[int, typer.Option(help="Processes drawing images (output is identical for any value).")] = 1,
) -> None:
    """Generate the toy world in the official dataset layouts (and optionally its stand-in models)."""
    from lyrics.toyworld.command import run_toyworld
    from lyrics.toyworld.world import WorldExistsError

    try:
        lines = run_toyworld(out, seed, dict(train=train, val=val, test=test, zeroshot=zeroshot), fast, standins, workers)
    except (WorldExistsError, ValueError) as exc:
        _fail(str(exc))
    for line in lines:
        typer.echo(line)


# --- evaluation (lyrics.eval): eval ------------------------------------------------------------------
@app.command("eval")
def eval_command(
    results: Annotated[Optional[list[Path]], typer.Argument(help="With --report: results.json files or folders (default: eval_results).")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="A stage-2 checkpoint directory (a stage-1 one for retrieval); with --endpoint, the served model's name.")] = None,
    benchmark: Annotated[Optional[str], typer.Option("--benchmark", "-b", help="retrieval (stage 1), coco-captions, nocaps, flickr30k, vqav2, okvqa, vizwiz, textvqa, gqa, ocrvqa, scienceqa-img, refcoco, refcoco+, refcocog, pope, mme, llava-bench (see --list).")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Folder with the benchmark's official annotation files (docs/evaluation.md).")] = None,
    images: Annotated[Optional[Path], typer.Option("--images", help="Image root of the official layout (default: --data).")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Split, comma list or 'all' (default: the paper's; all three for REC and POPE).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N samples.")] = None,
    shots: Annotated[int, typer.Option("--shots", min=0, help="In-context exemplars per query (Figure 5).")] = 0,
    seeds: Annotated[Optional[list[str]], typer.Option("--seeds", help="Few-shot seeds, e.g. 0,1,2,3,4 (the default: five seeds).")] = None,
    shard: Annotated[str, typer.Option("--shard", help="i/n: this process takes samples p with p % n == i.")] = "0/1",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Prompts per generate call.")] = 8,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run output folder (default eval_results); with --report the Markdown file.")] = None,
    refiner_store: Annotated[Optional[Path], typer.Option("--refiner-store", help="Feature store written by `lyrics refine` over the images with the checkpoint's refiner (else the refiner runs live).")] = None,
    refiner: RefinerOption = None,
    template: Annotated[Optional[int], typer.Option("--template", help="Table 10 template index of the benchmark's task (default: docs/evaluation.md).")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", min=1, help="Answer length limit (default per benchmark).")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", min=1, help="Raise the processor's prompt limit (few-shot prompts hold K+1 images).")] = None,
    device: Annotated[str, typer.Option("--device", help="Torch device, e.g. cpu or cuda:0.")] = "cpu",
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="LLM dtype: float32, bfloat16 or float16.")] = None,
    quantize: QuantizeOption = "none",
    share_prefix: Annotated[bool, typer.Option("--share-prefix", help="Answer the questions of a batch about one image from one encoding of their shared prompt prefix (same greedy answers, faster where images get several questions).")] = False,
    zero_grounding: Annotated[bool, typer.Option("--zero-grounding", help="Analysis: answer with the grounding queries' MQ-Former output zeroed before the language projection (same prompt, their information removed); recorded as model '<ckpt> (zero-grounding)': give it its own --out; --report shows it beside the full model.")] = False,
    mme_pairing: Annotated[str, typer.Option("--mme-pairing", help="MME acc+ pairs: 'lines' (consecutive questions of a subtask, as the official calculation.py) or 'image' (by image name).")] = "lines",
    judge_url: Annotated[Optional[str], typer.Option("--judge-url", rich_help_panel="LLaVA-Bench judge", help="OpenAI-compatible API base (e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1) or its /chat/completions URL; without it llava-bench only writes answers.")] = None,
    judge_model: Annotated[Optional[str], typer.Option("--judge-model", rich_help_panel="LLaVA-Bench judge", help="Judge model name (LLaVA's reviews: gpt-4-0314).")] = None,
    judge_key_env: Annotated[Optional[str], typer.Option("--judge-key-env", rich_help_panel="LLaVA-Bench judge", help="NAME of the environment variable holding the judge's API key (default OPENAI_API_KEY; unset = no key sent).")] = None,
    judge_timeout: Annotated[Optional[float], typer.Option("--judge-timeout", min=1, rich_help_panel="LLaVA-Bench judge", help="Seconds per judge request (default 120).")] = None,
    judge_retries: Annotated[Optional[int], typer.Option("--judge-retries", min=0, rich_help_panel="LLaVA-Bench judge", help="Retries after a timeout, connection error, HTTP 429 or 5xx (default 5, exponential backoff).")] = None,
    judge_context: Annotated[Optional[str], typer.Option("--judge-context", rich_help_panel="LLaVA-Bench judge", help="'llava' (default): the caption joined as LLaVA's script does, one character per line for a string caption; 'plain': the caption as written.")] = None,
    endpoint: Annotated[Optional[str], typer.Option("--endpoint", rich_help_panel="Served model", help="Score the model served at this OpenAI-compatible API base (e.g. http://127.0.0.1:8000/v1: lyrics serve, vLLM) instead of a checkpoint; --model then names the served model (default: the endpoint's only one).")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, rich_help_panel="Served model", help="With --endpoint: requests in flight at once.")] = 8,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="LYRICS_API_KEY", rich_help_panel="Served model", help="With --endpoint: sent as 'Authorization: Bearer KEY'; prefer $LYRICS_API_KEY (a command line is visible to other users).")] = None,
    vision_model: Annotated[Optional[Path], typer.Option("--vision-model", help="retrieval: the frozen image encoder's folder (stage-1 checkpoints do not hold it).")] = None,
    report: Annotated[bool, typer.Option("--report", help="Collect result files into Markdown tables beside the paper's numbers.")] = False,
    list_benchmarks: Annotated[bool, typer.Option("--list", help="List the benchmarks, their splits, templates and expected files.")] = False,
) -> None:
    """Evaluate a checkpoint on a paper benchmark in its official layout (sharded, resumable,
    few-shot), or build the leaderboard with --report.

    llava-bench answers are scored by a judge LLM as LLaVA's scripts do: --judge-url and --judge-model
    name an OpenAI-compatible endpoint; the API key is read from $OPENAI_API_KEY, or from the variable
    --judge-key-env names; reviews are kept in reviews.jsonl so a rerun asks only what is missing.

    --endpoint URL scores a model served behind an OpenAI-compatible endpoint (lyrics serve, vLLM)
    with the same scorers; --model then names the served model (docs/evaluation.md)."""
    from lyrics.eval import command

    if list_benchmarks:
        typer.echo(command.benchmark_listing_text())
        return
    if report:
        try:
            text = command.write_report(results, out)
        except (ValueError, FileNotFoundError) as exc:
            _fail(str(exc))
        typer.echo(f"wrote {out}" if out is not None else text)
        return
    if (model is None and endpoint is None) or benchmark is None or data is None:
        _fail("lyrics eval needs --model, --benchmark and --data (or --endpoint URL in place of --model; or --report / --list)")
    if benchmark == "retrieval" and endpoint is None:
        try:
            command.run_retrieval(model, data, images=images, split=split, limit=limit, refiner_store=refiner_store, vision_model=vision_model, out=out)
        except (ValueError, FileNotFoundError) as exc:
            _fail(str(exc))
        return
    from lyrics.data.official.common import FormatError
    from lyrics.eval.endpoint import EndpointError
    from lyrics.eval.judge import JudgeError
    from lyrics.eval.predictor import RefinerStoreMiss
    from lyrics.refiner.stages import BackendError
    from lyrics.refiner.store import StoreError

    fields = _refiner_options(refiner)
    try:
        command.run_benchmark(
            model, benchmark, data, images=images, split=split, limit=limit, shots=shots, seeds=seeds, shard=shard,
            batch_size=batch_size, out=out, refiner_store=refiner_store, template=template, max_new_tokens=max_new_tokens,
            max_length=max_length, device=device, dtype=dtype, refiner=fields, mme_pairing=mme_pairing, share_prefix=share_prefix,
            zero_grounding=zero_grounding, endpoint=None if endpoint is None else dict(url=endpoint, api_key=api_key, concurrency=concurrency),
            quantize=quantize,
            judge=dict(url=judge_url, model=judge_model, key_env=judge_key_env, timeout_s=judge_timeout, retries=judge_retries, context=judge_context),
        )  # fmt: skip
    except (ValueError, FileNotFoundError, IndexError, FormatError, RefinerStoreMiss, StoreError, BackendError, JudgeError, EndpointError) as exc:
        _fail(str(exc))


def _threads(threads: int) -> None:
    """Torch threads for a long toy job, and transformers' per-load reports and progress bars off (the
    job prints its own stage lines; a load problem still raises)."""
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(max(1, threads))
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@app.command("quickstart")
def quickstart_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (world, stand-ins, checkpoints, results.json, report.html).")] = Path("runs/quickstart"),
    fast: Annotated[bool, typer.Option("--fast", help="The small budget used by the tests (under 3 minutes on 2 cores).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the world, the stand-ins and training.")] = 0,
    threads: Annotated[int, typer.Option(help="Torch threads for training and evaluation (0: every core this process may use).")] = 0,
    precision: Annotated[str, typer.Option(help="auto (bfloat16 where the CPU has AMX or AVX512-BF16, else fp32), bf16 or fp32.")] = "auto",
) -> None:
    """Train and evaluate the whole Lyrics pipeline on the toy world: generate data, convert the LLM
    (SmolLM2-135M-Instruct), refine, train the stand-ins, stage 1, stage 2, evaluate against trivial
    baselines, write an HTML report, and ask the model a few questions about a test image."""
    from rich.console import Console

    from dataclasses import replace

    from lyrics.toyworld.quickstart import DEFAULT, FAST, Quickstart, available_cores
    from lyrics.toyworld.results import print_run

    _threads(threads or available_cores())
    console = Console()
    try:
        budget = replace(FAST if fast else DEFAULT, precision=precision)
        result = Quickstart(out, budget, seed=seed, log=console.print).run()
    except ValueError as exc:
        _fail(str(exc))
    print_run(console, result, out)


@app.command("ablate")
def ablate_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (shared with `lyrics quickstart --out`, whose data stages are reused for its seed; other seeds run in OUT/seed{S}).")] = Path("runs/quickstart"),
    fast: Annotated[bool, typer.Option("--fast", help="The quickstart's small budget.")] = False,
    rows: Annotated[Optional[list[str]], typer.Option("--row", help="Rows to run (repeatable): full, no_grounding_queries, no_spatial_representation, no_pretraining, spatial_text_switch. Default: all.")] = None,
    seed: Annotated[int, typer.Option(help="First seed (shared by every row): the seeds are seed .. seed+N-1.")] = 0,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Number of seeds N; each has its own world, stand-ins and runs. The table shows mean ± std over them and marks differences from `full` outside the seed-to-seed spread.")] = 1,
    threads: Annotated[int, typer.Option(help="Torch threads.")] = 2,
    precision: Annotated[str, typer.Option(help="auto, bf16 or fp32, as `lyrics quickstart --precision` (a folder run with another precision is refused).")] = "auto",
    status: Annotated[bool, typer.Option("--status", help="Train nothing: show which (seed, row) runs are done, running or left, and about how long the rest takes.")] = False,
) -> None:
    """The paper's Table 4 ablations at toy scale, with equal budget and seeds, beside the paper's deltas
    (also written as OUT/ablate/table4.md and table4.png)."""
    from dataclasses import replace

    from rich.console import Console

    from lyrics.toyworld import ablate
    from lyrics.toyworld.quickstart import DEFAULT, FAST
    from lyrics.toyworld.world import WorldExistsError

    unknown = [r for r in rows or [] if r not in ablate.ROWS]
    if unknown:
        _fail(f"unknown row(s) {unknown}; choose from {list(ablate.ROWS)}")
    if precision not in ("auto", "bf16", "fp32"):
        _fail(f"--precision must be auto, bf16 or fp32, got {precision!r}")
    budget = replace(FAST if fast else DEFAULT, precision=precision)
    console = Console()
    seed_range = tuple(range(seed, seed + seeds))
    if status:
        try:
            console.print(ablate.status_table(ablate.ablation_status(out, budget, rows=rows, seeds=seed_range)))
        except ValueError as exc:
            _fail(str(exc))
        return
    _threads(threads)
    try:
        table = ablate.run_ablation(out, budget, rows=rows, seeds=seed_range, log=console.print)
    except (ValueError, WorldExistsError) as exc:
        _fail(str(exc))
    console.print(ablate.ablation_table(table))
    pictures = [p for p in (out / "ablate" / "table4.md", out / "ablate" / "table4.png") if p.is_file()]
    console.print(f"written to {out / 'ablation.json'}" + "".join(f", {p}" for p in pictures))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
