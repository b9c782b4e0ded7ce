"""`--quantize int8` on vLLM: the decoder quantised as `lyrics serve --quantize int8` quantises it.

    python -m lyrics.serving_vllm serve MERGED --quantize int8       # or, offline:
    LLM(model=MERGED, ..., **engine_options("int8"))

vLLM 0.32 quantises a full-precision checkpoint as it loads through its `torchao` method: every
Linear layer of vLLM's own decoder (`LinearBase`) gets a torchao config. The plugin hands it the
config `lyrics.inference.quantize` applies (`torchao_int8_config`: int8 weight-only, one scale per
output row), serialised the way vLLM reads it (`hf_overrides["quantization_config_dict_json"]`).
vLLM's fused `qkv_proj` and `gate_up_proj` stack whole rows of q/k/v and gate/up, and a row's
scale depends on that row alone, so fusing changes no weight. What stays in full precision is what
`lyrics serve --quantize int8` leaves: the output layer (vLLM's `ParallelLMHead` is not a
`LinearBase`), and the image encoder, MQ-Former and projection (the plugin runs the project's own
torch modules, which vLLM's quantisation does not see). Greedy answers equal `lyrics serve
--quantize int8`'s (tests/serving_vllm/test_vllm_quantize.py).

Refused, before vLLM starts:
* `nf4`: vLLM 0.32 has no bitsandbytes method (its 4-bit paths read AWQ/GPTQ checkpoints, or are
  GPU formats such as MXFP4), so it cannot give `lyrics serve --quantize nf4`'s model.
* a stage-2 checkpoint served with its adapter: `lyrics serve --quantize` folds the LoRA in and then
  quantises; vLLM would quantise the base and run the adapter beside it in full precision, another
  model. `lyrics merge` it first.
* `--quantization` or `--hf-overrides` given as well: vLLM keeps one of each, so one would be lost.
"""

from __future__ import annotations

import json

METHODS = ("none", "int8")


def check(method: str) -> None:
    """A ValueError naming what works, for a method the plugin cannot serve on vLLM."""
    if method == "nf4":
        raise ValueError(
            "--quantize nf4: vLLM 0.32 has no bitsandbytes quantisation, so it cannot serve lyrics serve's nf4 model; "
            "use --quantize int8 here (torchao, weight-only int8), or lyrics serve --quantize nf4 on CUDA"
        )
    if method not in METHODS:
        raise ValueError(f"--quantize must be one of {', '.join(METHODS)} on vLLM, got {method!r}")


def config_json(method: str) -> str | None:
    """The torchao config for `method` as vLLM's `quantization_config_dict_json` (None for "none")."""
    check(method)
    if method == "none":
        return None
    try:
        from torchao.core.config import config_to_dict
    except ImportError as exc:
        raise ValueError(f"--quantize {method} on vLLM needs torchao in vLLM's environment (`make vllm` installs it): {exc}") from None
    from lyrics.inference.quantize import torchao_int8_config

    return json.dumps(config_to_dict(torchao_int8_config()))


def engine_options(method: str) -> dict:
    """Keyword arguments for vLLM's `LLM(...)` that quantise as `--quantize method` does."""
    config = config_json(method)
    return {} if config is None else {"quantization": "torchao", "hf_overrides": {"quantization_config_dict_json": config}}


def serve_options(method: str, rest: list[str]) -> list[str]:
    """`vllm serve` options for `--quantize method`; `rest`, the options going to vLLM, must not set
    its quantisation itself."""
    options = engine_options(method)
    if not options:
        return []
    clash = [name for name in ("--quantization", "-q", "--hf-overrides") if any(arg.partition("=")[0] == name for arg in rest)]
    if clash:
        raise ValueError(f"--quantize {method} sets vLLM's --quantization and --hf-overrides itself; drop {', '.join(clash)}")
    return ["--quantization", options["quantization"], "--hf-overrides", json.dumps(options["hf_overrides"])]
