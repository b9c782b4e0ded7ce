"""Quantised inference: the LLM's Linear weights stored in 8 or 4 bits after loading.

    model = LyricsForConditionalGeneration.from_pretrained(ckpt, quantize="int8")   # or:
    report = quantize_model(model, "int8")            # LoRA merged first, then int8 weights
    report.bytes_before, report.bytes_after, report.layers

Why: the LLM is almost all of a Lyrics model's weights (Vicuna-13B: 13 of 14 billion parameters),
so it decides whether a checkpoint fits a card or a laptop (LAVIS #294: no 8-bit loading, a 13B
model does not fit 24 GB). Methods:

* `int8`: int8 weight-only, per output row symmetric, through torchao (`Int8WeightOnlyConfig`, the
  library's maintained workflow; the `quant` extra) on CPU and CUDA. Activations stay in the model's
  dtype; eager torchao casts each int8 weight to the activation dtype inside its matmul, so weights
  take a quarter of their fp32 memory at rest, and decoding is not faster in eager mode on CPU
  (docs/serving.md has the measured numbers).
* `nf4` (and `int8` with `backend="bitsandbytes"`): bitsandbytes' `Linear4bit` (NF4, the QLoRA
  format, LLaVA's `--load-4bit`) or `Linear8bitLt` (LLM.int8()), CUDA only: the layers are
  quantised as they move to the device, so a model too large for the card in fp16 still loads.
  Asked for on another device, it is refused with a message naming the backend and the flag that
  works there.

What is left in full precision, and why: the output layer (`lm_head`), as transformers'
bitsandbytes integration does: in SmolLM2 and other small LLMs it is the input embedding itself
(tied), and quantising it would untie it and add an int8 copy beside the fp32 embedding; elsewhere
it is ~2% of the weights and the logits are where rounding shows first. The image encoder is not
touched; the MQ-Former (run once per image, not per token) only with `mqformer=True`, since on the
toy model it saves little and costs time (measured in bench/quantize.py).

A LoRA adapter is merged into the LLM first (PEFT `merge_and_unload`): quantising the base weights
and adding an fp32 adapter beside them would round the base but not the update, and keep the
adapter's extra matmuls on every token. A quantised model is for inference: it is not saved.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

METHODS = ("none", "int8", "nf4")
# Which backends can do each method; the first is the default.
BACKENDS: dict[str, tuple[str, ...]] = {"int8": ("torchao", "bitsandbytes"), "nf4": ("bitsandbytes",)}
# The model attribute recording what was done (never in config.json: a checkpoint stays unquantised).
MARK = "lyrics_quantization"


class QuantizationError(ValueError):
    """A quantisation request this backend or device cannot carry out; the message names the
    backend and the flag that would work."""


@dataclass(frozen=True)
class QuantizationReport:
    """What `quantize_model` did.

    Args:
        method, backend: as resolved ("none" / None when nothing was done).
        layers: Linear layers replaced.
        bytes_before, bytes_after: weight memory of the whole model (parameters and buffers, tied
            weights once, quantised tensors by their stored data and scales).
    """

    method: str
    backend: str | None
    layers: int
    bytes_before: int
    bytes_after: int


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds: a plain tensor its elements; a torchao tensor subclass the inner tensors
    it flattens into (int8 data, scales); a bitsandbytes parameter its packed data and statistics."""
    if type(tensor) not in (torch.Tensor, nn.Parameter) and hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, n)) for n in names if getattr(tensor, n, None) is not None)
    total = tensor.numel() * tensor.element_size()
    state = getattr(tensor, "quant_state", None)  # bnb Params4bit: absmax (and its own quantisation)
    for inner in (getattr(state, "absmax", None), getattr(getattr(state, "state2", None), "absmax", None), getattr(tensor, "SCB", None)):
        if isinstance(inner, torch.Tensor):
            total += inner.numel() * inner.element_size()
    return total


def weight_bytes(module: nn.Module) -> int:
    """Weight memory of `module`: parameters and buffers, each shared tensor counted once."""
    seen: set[int] = set()
    total = 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor_bytes(tensor)
    return total


def _targets(model: nn.Module, mqformer: bool) -> Iterator[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, layer) of every Linear to quantise: the LLM's but its output layer, and
    the MQ-Former's when asked."""
    llm = model.llm
    output = llm.get_output_embeddings()
    roots = [llm] + ([model.mqformer] if mqformer else [])
    for root in roots:
        for parent in root.modules():
            for name, child in parent.named_children():
                if type(child) is nn.Linear and child is not output:
                    yield parent, name, child


def check_quantization(method: str, device: str | torch.device = "cpu", backend: str | None = None) -> str | None:
    """The backend that will quantise with `method` on `device` (None for "none"), checked before a
    model is loaded: an unknown method is a ValueError, a backend that cannot do it there a
    `QuantizationError` naming the flag that works."""
    if method not in METHODS:
        raise ValueError(f"quantize must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "none":
        return None
    device = torch.device(device)
    allowed = BACKENDS[method]
    backend = backend or allowed[0]
    if backend not in allowed:
        raise QuantizationError(f"quantize={method!r} is done by {' or '.join(allowed)}, not backend={backend!r}")
    if backend == "bitsandbytes" and device.type != "cuda":
        raise QuantizationError(
            f"--quantize {method}: the bitsandbytes backend quantises on CUDA only, and the model runs on {device.type}; "
            f"use --device cuda:0, or on {device.type} --quantize int8 (torchao, weight-only int8)"
        )
    return backend


def _import(backend: str):
    try:
        if backend == "torchao":
            # torchao warns at import about its CUDA-only kernels it cannot load on a CPU build, and
            # about a deprecated torch.compile registration: neither concerns eager inference.
            # (transformers imports torchao itself when it is installed, with the same warnings,
            # whenever a model loads; this only covers the case where it has not.)
            quiet = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
            levels = [log.level for log in quiet]
            for log in quiet:
                log.setLevel(logging.ERROR)
            try:
                from torchao.quantization import quantize_
            finally:
                for log, level in zip(quiet, levels):
                    log.setLevel(level)
            return quantize_, torchao_int8_config
        import bitsandbytes

        return bitsandbytes
    except ImportError as exc:
        extra = "pip install 'lyrics[quant]'" if backend == "torchao" else "pip install bitsandbytes (CUDA)"
        raise QuantizationError(f"--quantize needs the {backend} package ({extra}): {exc}") from None


def torchao_int8_config(group_size: int | None = None):
    """torchao's `Int8WeightOnlyConfig` as `--quantize int8` uses it: one scale per output row (or
    per `group_size` input columns), and `set_inductor_config=False` (this is eager inference: leave
    torch.compile's global settings alone). vLLM's plugin serialises this same config for vLLM's
    torchao method (lyrics.serving_vllm.quantize), so both quantise the weights alike."""
    from torchao.quantization import Int8WeightOnlyConfig

    options = {}
    if group_size is not None:
        from torchao.quantization.granularity import PerGroup

        options = {"granularity": PerGroup(group_size)}
    return Int8WeightOnlyConfig(set_inductor_config=False, **options)


def _bitsandbytes_layer(bnb, layer: nn.Linear, method: str, device: torch.device) -> nn.Module:
    """`layer` as a bitsandbytes layer on `device`; bitsandbytes quantises a weight as it moves from
    the CPU to the GPU, so the fp weight passes through the CPU and never fills the card."""
    weight = layer.weight.data.cpu()
    if method == "nf4":
        compute = weight.dtype if weight.dtype in (torch.float16, torch.bfloat16) else torch.float32
        new = bnb.nn.Linear4bit(layer.in_features, layer.out_features, bias=layer.bias is not None, compute_dtype=compute, quant_type="nf4", device="meta")
        new.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4", module=new)
    else:
        new = bnb.nn.Linear8bitLt(layer.in_features, layer.out_features, bias=layer.bias is not None, has_fp16_weights=False, threshold=6.0, device="meta")
        new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    if layer.bias is not None:
        new.bias = nn.Parameter(layer.bias.data.cpu(), requires_grad=False)
    return new.to(device)


def _release_checkpoint_memory(llm: nn.Module) -> None:
    """Give the LLM's unquantised CPU tensors (embedding, norms, a tied output layer) storage of
    their own, then hand freed heap memory back to the OS.

    transformers loads a checkpoint's tensors out of one buffer per file, and a tensor left in it
    keeps the whole buffer alive: measured on SmolLM2-135M, the process's RSS went *up* from 765 to
    1480 MB with int8 weights until the rest was copied out (967 MB), and to 642 MB once glibc's
    `malloc_trim` returned the freed pages (it keeps them otherwise, for reuse)."""
    import ctypes
    import ctypes.util

    with torch.no_grad():
        for param in llm.parameters():
            if type(param) is nn.Parameter and param.device.type == "cpu":
                param.data = param.data.clone()
        for module in llm.modules():
            for name, buffer in list(module._buffers.items()):
                if buffer is not None and type(buffer) is torch.Tensor and buffer.device.type == "cpu":
                    module._buffers[name] = buffer.clone()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the allocator keeps the pages, nothing is lost
        pass


def quantize_model(
    model: nn.Module,
    method: str = "none",
    *,
    backend: str | None = None,
    device: str | torch.device | None = None,
    mqformer: bool = False,
    group_size: int | None = None,
) -> QuantizationReport:
    """Quantise a loaded `LyricsForConditionalGeneration` in place (see the module docstring).

    Args:
        model: the stage-2 model; a LoRA adapter on its LLM is merged first.
        method: "none", "int8" or "nf4".
        backend: "torchao" (int8, CPU and CUDA; the default for int8) or "bitsandbytes" (int8 or
            nf4, CUDA only; the default for nf4).
        device: where the quantised layers go (default: where the LLM is). Quantising on the way to
            the device keeps a large fp model off the card; move the rest with `model.to(device)` after.
        mqformer: also quantise the MQ-Former's Linear layers.
        group_size: torchao int8 only: one scale per `group_size` input columns of each row instead of
            one per row (finer scales, more of them; the row length must divide by it).

    Raises:
        ValueError: an unknown method, or a model already quantised.
        QuantizationError: a backend that cannot do the method on this device, or is not installed.
    """
    device = torch.device(device) if device is not None else next(model.llm.parameters()).device
    backend = check_quantization(method, device, backend)
    before = weight_bytes(model)
    if backend is None:
        return QuantizationReport("none", None, 0, before, before)
    if getattr(model, MARK, None) is not None:
        raise ValueError(f"the model is already quantised ({getattr(model, MARK)}); load it again to quantise it otherwise")
    if group_size is not None:  # checked before the model changes
        if backend != "torchao":
            raise QuantizationError(f"group_size is a torchao int8 option; backend={backend!r} quantises in its own blocks")
        # the layers `_targets` will find once a LoRA adapter is merged (its own lora_A/B are not)
        sizes = {layer.in_features for parent, _, layer in _targets(model, mqformer) if not isinstance(parent, nn.ModuleDict)}
        if group_size < 1 or any(size % group_size for size in sizes):
            raise QuantizationError(f"group_size={group_size} must divide every quantised layer's input size ({sorted(sizes)})")
    library = _import(backend)
    if hasattr(model.language_model, "merge_and_unload"):
        model.language_model = model.language_model.merge_and_unload()
    targets = list(_targets(model, mqformer))
    if backend == "torchao":
        quantize_, config = library
        chosen = {id(layer) for _, _, layer in targets}
        quantize_(model, config(group_size), filter_fn=lambda module, _fqn: id(module) in chosen, device=device)
    else:
        for parent, name, layer in targets:
            setattr(parent, name, _bitsandbytes_layer(library, layer, method, device))
    _release_checkpoint_memory(model.llm)
    setattr(model, MARK, f"{method}/{backend}")
    return QuantizationReport(method, backend, len(targets), before, weight_bytes(model))
