"""Regions (referential dialogue) on vLLM, by the rules of `lyrics.inference.regions` (no copy of them).

`lyrics serve` takes a request's `regions: [[x1, y1, x2, y2], ...]` and `region_format`, and
`LyricsPipeline.conversation` puts them into the last user message (`with_regions`, then
`expand_regions`: each `<region>` becomes the box's markup in the checkpoint's coordinate format).
vLLM 0.32 has no field for them: its request model keeps unknown top-level fields and ignores them,
and the one per-request channel into a model's processor is `mm_processor_kwargs` (a
`ChatCompletionRequest` field, and `LLM.chat(..., mm_processor_kwargs=...)`), which reaches the chat
renderer (`ChatParams.mm_processor_kwargs`) and then `BaseMultiModalProcessor.apply`
(`inputs.hf_processor_mm_kwargs`). So:

- the plugin's renderer (`renderer.LyricsRenderer`) reads `regions` and `region_format` from the
  request's `mm_processor_kwargs` (`region_options`; any other key is refused) and builds the prompt
  as `lyrics serve` does (`build_conversation`: `with_regions`, then `expand_regions` with the
  image's size), so the ids equal `lyrics serve`'s; the processor (`model.LyricsMultiModalProcessor.apply`)
  checks the kwargs again and takes them out before the image is processed and cached;
- `RegionsMiddleware` (an ASGI middleware that `python -m lyrics.serving_vllm serve` adds with
  vLLM's `--middleware`) moves `lyrics serve`'s top-level `regions` and `region_format` into
  `mm_processor_kwargs`, so that the same request body goes to both servers. vLLM refuses
  per-request `mm_processor_kwargs` unless started with `--trust-request-mm-kwargs` (the helper adds
  it): the processor takes no key but these two, and the middleware refuses per-request
  `media_io_kwargs`, which that flag would let through as well.

Errors are `InputError`s naming `regions` (or `region_format`, `mm_processor_kwargs`); the renderer and
the processor raise them to vLLM as `VLLMValidationError`, which vLLM answers with a 400 and that `param`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lyrics.inference.inputs import InputError
from lyrics.inference.regions import REGION_FORMATS

KEYS = ("regions", "region_format")
MIDDLEWARE = "lyrics.serving_vllm.regions.RegionsMiddleware"


def region_options(kwargs: Mapping[str, Any] | None) -> tuple[list[Any] | None, str]:
    """A request's `mm_processor_kwargs` -> (regions or None, region_format), checked as `lyrics
    serve`'s request model checks them: a list of boxes (no `(tag, box)` pairs, which only the
    Python API takes) and a known format. Any other key is refused: the Lyrics processor takes none,
    and a silently ignored option would be a wrong answer."""
    rest = dict(kwargs or {})
    regions = rest.pop("regions", None)
    region_format = rest.pop("region_format", "pixels")
    if rest:
        raise InputError(f"mm_processor_kwargs: the Lyrics processor takes only {list(KEYS)}, got {sorted(rest)}", param="mm_processor_kwargs")
    if region_format not in REGION_FORMATS:
        raise InputError(f"region_format must be one of {sorted(REGION_FORMATS)}, got {region_format!r}", param="region_format")
    if regions is None:
        return None, region_format
    if not isinstance(regions, (list, tuple)):
        raise InputError(f"regions must be a list of boxes [x1, y1, x2, y2], got {regions!r}", param="regions")
    boxes = []
    for region in regions:
        if not isinstance(region, (list, tuple)) or any(isinstance(v, (list, tuple, dict)) for v in region):
            raise InputError(f"a region must be 4 finite coordinates x1,y1,x2,y2, got {region!r}", param="regions")
        try:  # numbers as floats, as `lyrics serve`'s `list[list[float]]` reads them (and names them in errors)
            boxes.append([float(v) for v in region])
        except (TypeError, ValueError):
            boxes.append(list(region))  # `to_pixels` refuses it, naming it
    return boxes, region_format


# --- the HTTP side: `lyrics serve`'s request body on vLLM -----------------------------------------
def move_regions(payload: Any) -> bool:
    """Move a chat request body's top-level `regions` / `region_format` into its
    `mm_processor_kwargs` (in place); True when the body changed. Refused (`InputError`): the same
    key given both ways with different values, regions without an image (vLLM does not run the
    processor for a text-only prompt, so they would be dropped), per-request `media_io_kwargs`."""
    if not isinstance(payload, dict):
        return False
    if payload.get("media_io_kwargs"):
        raise InputError("media_io_kwargs: this server decodes images as `lyrics serve` does; per-request media options are refused", param="media_io_kwargs")
    moved = {key: payload.pop(key) for key in KEYS if key in payload}
    if "regions" in moved and moved["regions"] is None:
        del moved["regions"]
    kwargs = payload.get("mm_processor_kwargs")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise InputError("mm_processor_kwargs must be an object", param="mm_processor_kwargs")
    for key, value in moved.items():
        if key in kwargs and kwargs[key] != value:
            raise InputError(f"{key} is given twice, at the top level and in mm_processor_kwargs, with different values", param=key)
        kwargs[key] = value
    if kwargs.get("regions") and not _has_image(payload.get("messages")):
        raise InputError("regions refer to an image, but no image was given", param="regions")
    if moved:
        payload["mm_processor_kwargs"] = kwargs
    return bool(moved)


def _has_image(messages: Any) -> bool:
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(isinstance(p, dict) and str(p.get("type", "")).startswith("image") for p in content):
            return True
    return False


def error_body(exc: InputError) -> bytes:
    """vLLM's error shape (`ErrorResponse`)."""
    return json.dumps({"error": {"message": exc.message, "type": "BadRequestError", "param": exc.param, "code": 400}}).encode()


class RegionsMiddleware:
    """ASGI middleware for vLLM's OpenAI server (`--middleware lyrics.serving_vllm.regions.RegionsMiddleware`):
    POST .../chat/completions bodies that name `regions`, `region_format` or `media_io_kwargs` are
    parsed and passed on through `move_regions` (a refusal is answered here, in vLLM's error shape);
    every other request goes through untouched."""

    NAMES = (b'"regions"', b'"region_format"', b'"media_io_kwargs"')

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST" or not scope.get("path", "").endswith("/chat/completions"):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if any(name in body for name in self.NAMES):
            try:
                payload = json.loads(body)
                if move_regions(payload):
                    body = json.dumps(payload).encode()
                    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
                    scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
            except InputError as exc:
                await _respond(send, 400, error_body(exc))
                return
            except ValueError:  # not JSON: vLLM answers it as it answers any bad body
                pass
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _respond(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
