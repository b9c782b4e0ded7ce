"""Load the frozen pretrained parts (image encoder, LLM, refiner models) faithfully, or fail clearly.

transformers' `from_pretrained` initialises every weight it does not find in the checkpoint at
random and only logs a "LOAD REPORT" table: a BLIP-2 folder read as a bare `Blip2VisionModel`, or a
checkpoint with a lost shard, gives a working model with random weights. A frozen part is never
trained afterwards, so Lyrics refuses such a load. The check reads transformers' own report
(`output_loading_info=True`): its `missing_keys` already leave out tied weights and the keys the model
class declares optional (`_keys_to_ignore_on_load_missing`), and size-mismatched weights already
raise unless `ignore_mismatched_sizes=True` (when they count as missing here). Unexpected keys are
normal (a `CLIPVisionModel` read from a whole `CLIPModel` folder leaves the text tower unused) and
pass. See docs/loading.md.
"""

from __future__ import annotations

SHOWN_KEYS = 5
_UNSET = object()


class MissingWeightsError(ValueError):
    """A pretrained checkpoint lacks weights the model needs (transformers would initialise them at random)."""


def check_loading_info(info: dict, model_name: str, path) -> None:
    """Raise `MissingWeightsError` when transformers' loading `info` (`from_pretrained(...,
    output_loading_info=True)`) reports missing or size-mismatched weights; name a few and the count."""
    missing = sorted(set(info.get("missing_keys", ())) | {key for key, *_ in info.get("mismatched_keys", ())})
    if not missing:
        return
    shown = ", ".join(missing[:SHOWN_KEYS]) + (f", ... ({len(missing) - SHOWN_KEYS} more)" if len(missing) > SHOWN_KEYS else "")
    raise MissingWeightsError(
        f"{path}: {len(missing)} weight(s) of {model_name} are not in the checkpoint and would be initialised at random: "
        f"{shown}. Is this the right checkpoint for {model_name}?"
    )


def load_pretrained(model_class, path, expected_unused: tuple[str, ...] = (), **kwargs):
    """`model_class.from_pretrained(path, **kwargs)`, refusing a checkpoint that misses any of the model's
    weights (`MissingWeightsError`, a `ValueError`). `model_class` is a transformers model or auto class.

    `expected_unused`: regexes of checkpoint keys this load leaves unused by design (the text tower of
    a whole CLIP read for its vision tower); transformers then keeps them out of its load report, so
    a user sees a report only when something unexpected happened."""
    # Set on the class for the duration of the load (a subclass would lose transformers' per-class
    # key conversions, such as stripping a whole CLIP's `vision_model.` prefix).
    before = model_class.__dict__.get("_keys_to_ignore_on_load_unexpected", _UNSET)
    if expected_unused:
        inherited = list(getattr(model_class, "_keys_to_ignore_on_load_unexpected", None) or [])
        model_class._keys_to_ignore_on_load_unexpected = inherited + list(expected_unused)
    try:
        model, info = model_class.from_pretrained(str(path), output_loading_info=True, **kwargs)
    finally:
        if expected_unused:
            if before is _UNSET:
                del model_class._keys_to_ignore_on_load_unexpected
            else:
                model_class._keys_to_ignore_on_load_unexpected = before
    check_loading_info(info, type(model).__name__, path)
    return model
