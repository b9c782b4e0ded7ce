"""lmms-eval adapter: run any lmms-eval task on a Lyrics checkpoint.

    pip install 'lyrics[lmms]'
    lmms-eval --model lyrics --model_args pretrained=/path/to/ckpt,batch_size=8 --tasks pope

lmms-eval finds the model through the `lmms_eval.models` entry point that `lyrics` declares
(`lyrics = "lyrics.eval.lmms:manifest"`), which returns a `ModelManifest` naming `LyricsLMMS`
as a "simple" model (prompts arrive as text with the task's own formatting, images through the
task's `doc_to_visual`).

`generate_until` answers with the same batched, greedy, multi-image `LyricsPredictor` the built-in
harness uses: the task's context becomes one human turn; its `<image>` placeholders (if the task
writes them) take the document's images in order, otherwise one `<image>` per image is put in front
of the text. `until` strings cut the answer and `max_new_tokens` limits it. Decoding is greedy
(the paper's setting); a task asking for sampling (temperature > 0) is still decoded greedily and
a warning says so once. Log-likelihood scoring is not supported (the model API has no scoring path
yet): `loglikelihood` raises `NotImplementedError` naming the alternative.

This module imports without lmms-eval installed (`LyricsLMMS` then raises an ImportError with the
install command when constructed).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from lyrics.eval.predictor import LyricsPredictor, Prompt

try:  # optional dependency: the adapter subclasses lmms-eval's model API when it is installed
    from lmms_eval.api.model import lmms as _LMMSBase

    LMMS_EVAL_IMPORT_ERROR: Exception | None = None
except Exception as exc:  # noqa: BLE001 - any failure to import means "not available"
    _LMMSBase = object  # type: ignore[assignment,misc]
    LMMS_EVAL_IMPORT_ERROR = exc

MODEL_ID = "lyrics"
IMAGE_TOKEN = "<image>"
DEFAULT_MAX_NEW_TOKENS = 128
logger = logging.getLogger(__name__)


def manifest():
    """The lmms-eval entry point (`lmms_eval.models` group): registers `LyricsLMMS` as "lyrics"."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.LyricsLMMS")


def _flatten(visuals: Any) -> list[Any]:
    if visuals is None:
        return []
    if isinstance(visuals, (list, tuple)):
        return [v for item in visuals for v in _flatten(item)]
    return [visuals]


class LyricsLMMS(_LMMSBase):  # type: ignore[misc,valid-type]
    """Lyrics as an lmms-eval model ("simple" kind).

    Args (lmms-eval `--model_args`, all strings there):
        pretrained: the checkpoint directory.
        device: torch device ("cpu", "cuda:0").
        dtype: LLM dtype (float32, bfloat16, float16); default the checkpoint's.
        batch_size: requests per generate call.
        max_length: prompt limit of the processor (raise it for multi-image prompts).
        predictor: an already built `LyricsPredictor` (Python use and tests; skips loading).
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        device: str = "cpu",
        dtype: str | None = None,
        batch_size: int | str = 1,
        max_length: int | str | None = None,
        predictor: LyricsPredictor | None = None,
        **kwargs: Any,
    ) -> None:
        if LMMS_EVAL_IMPORT_ERROR is not None:
            raise ImportError(
                f"the lmms-eval adapter needs lmms-eval: pip install 'lyrics[lmms]' ({LMMS_EVAL_IMPORT_ERROR})"
            ) from LMMS_EVAL_IMPORT_ERROR
        super().__init__()
        if kwargs:
            logger.warning("LyricsLMMS ignores unknown model_args: %s", sorted(kwargs))
        if predictor is None:
            if not pretrained:
                raise ValueError("LyricsLMMS needs pretrained=<checkpoint directory>")
            predictor = LyricsPredictor.from_pretrained(pretrained, device, dtype, max_length=int(max_length) if max_length else None)
        self.predictor = predictor
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._warned_sampling = False

    # --- lmms-eval API ----------------------------------------------------------------------------
    def loglikelihood(self, requests: Sequence[Any]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "LyricsLMMS does not implement loglikelihood (multiple-choice tasks scored by likelihood); "
            "use the task's generate_until variant, or `lyrics eval`, which parses generated choices"
        )

    def generate_until_multi_round(self, requests: Sequence[Any]) -> list[str]:
        raise NotImplementedError("LyricsLMMS does not implement multi-round generation; use generate_until tasks")

    def generate_until(self, requests: Sequence[Any]) -> list[str]:
        """One answer per `Instance` whose args are `(context, gen_kwargs, doc_to_visual, doc_id,
        task, split)`, in the order given; batched `batch_size` at a time."""
        prompts = [self._prompt(request) for request in requests]
        answers: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            for prediction in self.predictor.predict(prompts[start : start + self.batch_size]):
                if prediction.error:
                    logger.warning("lyrics: no answer (%s)", prediction.error)
                answers.append(prediction.text)
        return answers

    # --- helpers ------------------------------------------------------------------------------------
    def _prompt(self, request: Any) -> Prompt:
        context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args[:6]
        gen_kwargs = dict(gen_kwargs or {})
        visuals = _flatten(doc_to_visual(self.task_dict[task][split][doc_id])) if doc_to_visual is not None else []
        until = gen_kwargs.get("until") or []
        until = (until,) if isinstance(until, str) else tuple(until)
        if (float(gen_kwargs.get("temperature") or 0) > 0 or gen_kwargs.get("do_sample")) and not self._warned_sampling:
            logger.warning("lyrics: the task asks for sampling; decoding greedily (the paper's setting)")
            self._warned_sampling = True
        text = str(context)
        placed = text.count(IMAGE_TOKEN)
        if placed == 0 and visuals:
            text = f"{IMAGE_TOKEN}\n" * len(visuals) + text
        elif placed != len(visuals):
            raise ValueError(f"task {task} doc {doc_id}: the context holds {placed} {IMAGE_TOKEN} but the document has {len(visuals)} images")
        max_new_tokens = int(gen_kwargs.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
        return Prompt([{"from": "human", "value": text}], list(visuals), max_new_tokens, until)
