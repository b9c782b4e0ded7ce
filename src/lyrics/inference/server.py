"""`lyrics serve`: an OpenAI-compatible HTTP API over `LyricsPipeline` (FastAPI + uvicorn).

    POST /v1/chat/completions   chat completions; `stream: true` answers with server-sent events
    GET  /v1/models             the served model
    GET  /health                status, model and queue depth (no API key needed)

Any OpenAI client works: images travel as `image_url` content parts with `data:` URLs; the answer's
boxes (pixels of the sent image) and the refiner's objects come in the extra `lyrics` field.

Everything a caller sends is bounded before it costs anything: the body size (413, read in chunks,
never trusting Content-Length alone), the time the body takes to arrive (408, `deadline.BodyDeadline`),
its JSON nesting depth (400, checked before pydantic walks it), the decoded image bytes, pixels and
aspect ratio (400, header checked before decoding), `max_tokens` (400 above the cap, not clamped
silently), message count and text length, and requests queued or running (429 when full, 503 when
shutting down or a request waited too long). Remote URLs and local paths are refused unless allowed.
Every error has OpenAI's error shape and a message naming the offending field and quoting this
server's own limit. A failure inside a batch fails only the request that causes it (`batching`).
The request body's JSON schema is published at /openapi.json (the fuzz tests are generated from it).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lyrics.inference.batching import DynamicBatcher, QueueFull, Unavailable, batch_stats
from lyrics.inference.deadline import BodyDeadline
from lyrics.inference.generation import GenerationSettings
from lyrics.inference.inputs import InputError
from lyrics.inference.limits import ServerLimits, load_image_url, parse_json
from lyrics.inference.pipeline import ChatRequest, LyricsPipeline, PipelineResult
from lyrics.inference.schemas import ChatCompletion, ChatCompletionRequest, chat_turns, Choice, ModelCard, ModelList, ResponseMessage, Usage, error_body

log = logging.getLogger("lyrics.serve")
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
               405: "invalid_request_error", 408: "invalid_request_error", 413: "invalid_request_error",
               429: "rate_limit_error", 503: "server_error"}  # fmt: skip


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    headers = {"Retry-After": "1"} if status in (429, 503) else {"Connection": "close"} if status == 408 else None
    return JSONResponse(error_body(message, ERROR_TYPES.get(status, "server_error"), param, code), status_code=status, headers=headers)


def _validation_message(exc: ValidationError | RequestValidationError) -> tuple[str, str | None]:
    """pydantic errors -> one readable line naming each bad field ("messages.0.role: ...")."""
    parts, first = [], None
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        first = first or loc or None
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts), first


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it passes `limit` bytes (a lying Content-Length included)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise APIError(413, f"request body is {int(declared)} bytes, more than the limit of {limit}", code="request_too_large")
        except ValueError:
            raise APIError(400, "invalid Content-Length header") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body is more than the limit of {limit} bytes", code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


# --- request -> pipeline ----------------------------------------------------------------------------
def build_request(body: ChatCompletionRequest, limits: ServerLimits, pipeline: LyricsPipeline, default_temperature: float) -> ChatRequest:
    """Validate an OpenAI request against the limits and turn it into a `ChatRequest` (decodes the image)."""
    if body.n != 1:
        raise APIError(400, f"n={body.n} is not supported: this server returns one choice per request", param="n")
    if len(body.messages) > limits.max_messages:
        raise APIError(400, f"{len(body.messages)} messages, more than the limit of {limits.max_messages}", param="messages")
    max_tokens = body.max_completion_tokens or body.max_tokens or limits.default_max_tokens
    if max_tokens > limits.max_tokens:
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise APIError(400, f"{param}={max_tokens} exceeds this server's limit of {limits.max_tokens}", param=param, code="max_tokens_too_large")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > 4:
        raise APIError(400, f"at most 4 stop sequences, got {len(stop)}", param="stop")
    temperature = default_temperature if body.temperature is None else body.temperature
    settings = GenerationSettings(
        max_new_tokens=max_tokens, do_sample=temperature > 0, temperature=temperature if temperature > 0 else 1.0,
        top_p=body.top_p if body.top_p is not None else 1.0, stop=tuple(stop),
    )  # fmt: skip

    system, turns, images = chat_turns(body.messages, pipeline.processor.config.image_token, limits.max_text_chars)
    image = None
    if images:
        url, what = images[0]
        image = load_image_url(url, limits, what)
    return ChatRequest(
        image=image, prompt=turns[-1]["value"], history=turns[:-1] or None, regions=body.regions, region_format=body.region_format,
        system=system, settings=settings, cancelled=threading.Event(),
    )  # fmt: skip


def parse_request(raw: bytes, limits: ServerLimits) -> ChatCompletionRequest:
    """Body bytes -> validated request (runs in a worker thread: a 20 MB body takes a moment)."""
    payload = parse_json(raw, limits.max_json_depth)
    try:
        return ChatCompletionRequest.model_validate(payload)
    except ValidationError as exc:
        message, param = _validation_message(exc)
        raise APIError(400, message, param) from None


def request_body_openapi(model_name: str, limits: ServerLimits) -> tuple[dict[str, Any], dict[str, Any]]:
    """The POST body's OpenAPI entry and the component schemas it refers to. The handler reads the
    body itself (size limit, deadline, depth limit come first), so FastAPI cannot infer it; the
    schema is the pydantic model's, narrowed to what this server accepts: its one model, `n` = 1,
    `max_tokens` up to its cap, at most 4 stop strings and `max_messages` messages."""
    schema = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.pop("$defs", {})
    props = schema["properties"]
    props["model"] = {**props["model"], "enum": [model_name]}
    props["n"] = {**props["n"], "maximum": 1}
    props["messages"] = {**props["messages"], "maxItems": limits.max_messages}
    for name in ("max_tokens", "max_completion_tokens"):
        props[name] = {**props[name], "anyOf": [{"type": "integer", "minimum": 1, "maximum": limits.max_tokens}, {"type": "null"}]}
    props["stop"] = {**props["stop"], "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}, {"type": "null"}]}
    body = {"required": True, "content": {"application/json": {"schema": schema}}}
    return body, components


def lyrics_field(result: PipelineResult) -> dict[str, Any]:
    """The response's extension: the answer's boxes, the refiner's view, and the regions asked about (pixels)."""
    return {
        "boxes": [box.to_dict() for box in result.boxes],
        "regions": [[round(v, 2) for v in region] for region in result.regions],
        "tags": list(result.tags),
        "objects": [{k: v for k, v in obj.to_dict().items() if k != "mask_rle"} for obj in result.objects],
        "spatial_text": result.spatial_text,
        "image_size": list(result.image_size) if result.image_size else None,
    }


# --- the app ------------------------------------------------------------------------------------
def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves in OpenAI's shape: API and input errors with their status, unknown routes
    naming the endpoints, validation errors naming the field, anything else a logged 500."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError):
        return _error(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError):
        return _error(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        message = f"{exc.detail}: {request.method} {request.url.path}"
        if exc.status_code in (404, 405):
            message += " (endpoints: POST /v1/chat/completions, GET /v1/models, GET /health)"
        return _error(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return _error(400, message, param)

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception):
        log.exception("internal error")
        return _error(500, f"internal error: {type(exc).__name__}")


def authorize(request: Request, api_key: str | None) -> None:
    """401 unless the request carries `Authorization: Bearer <api_key>` (no key: open)."""
    if api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
        raise APIError(401, "missing or invalid API key (send 'Authorization: Bearer <key>')", code="invalid_api_key")


def submit(batcher: DynamicBatcher, chat: ChatRequest, on_text=None):
    """Queue a request: a full queue is 429, a closing server 503."""
    try:
        return batcher.submit(chat, on_text=on_text)
    except QueueFull as exc:
        raise APIError(429, str(exc), code="queue_full") from None
    except Unavailable as exc:
        raise APIError(503, str(exc), code="unavailable") from None


def _usage(result: PipelineResult) -> Usage:
    return Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens, total_tokens=result.prompt_tokens + result.completion_tokens)


async def answer(batcher: DynamicBatcher, chat: ChatRequest, completion_id: str, created: int, model_name: str) -> dict[str, Any]:
    """A whole `chat.completion`; a client that leaves cancels its row."""
    job = submit(batcher, chat)
    try:
        result: PipelineResult = await job.result
    except (QueueFull, Unavailable) as exc:
        raise APIError(429 if isinstance(exc, QueueFull) else 503, str(exc)) from None
    finally:
        if not job.result.done() or job.result.cancelled():
            chat.cancelled.set()  # the client left: stop its row
    choice = Choice(message=ResponseMessage(content=result.text), finish_reason=result.finish_reason)
    completion = ChatCompletion(id=completion_id, created=created, model=model_name, choices=[choice], usage=_usage(result), lyrics=lyrics_field(result))
    return completion.model_dump()


async def stream_answer(batcher: DynamicBatcher, chat: ChatRequest, completion_id: str, created: int, model_name: str, include_usage: bool):
    """`chat.completion.chunk` server-sent events: the role, the text as decoded, the finish reason
    with the `lyrics` field, optionally the usage, `[DONE]`. Bad input still gets its 4xx status
    (the batcher reports it before the first byte); later errors are reported in-band."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    job = submit(batcher, chat, on_text=lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text))
    try:
        await job.started
    except (QueueFull, Unavailable) as exc:
        raise APIError(429 if isinstance(exc, QueueFull) else 503, str(exc)) from None
    except BaseException:
        chat.cancelled.set()
        raise
    job.result.add_done_callback(lambda _: pieces.put_nowait(None))

    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        data = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model_name, "choices": choices, **extra}
        return f"data: {json.dumps(data)}\n\n"

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        return event([{"index": 0, "delta": delta, "finish_reason": finish}], **extra)

    async def events():
        try:
            yield chunk({"role": "assistant", "content": ""})
            while (piece := await pieces.get()) is not None:
                yield chunk({"content": piece})
            try:
                result: PipelineResult = job.result.result()
            except Exception as exc:  # noqa: BLE001 - headers are sent: report in-band
                status = exc.status if isinstance(exc, InputError) else 503 if isinstance(exc, Unavailable) else 500
                yield f"data: {json.dumps(error_body(str(exc), ERROR_TYPES.get(status, 'server_error')))}\n\n"
            else:
                yield chunk({}, result.finish_reason, lyrics=lyrics_field(result))
                if include_usage:
                    yield event([], usage=_usage(result).model_dump())
            yield "data: [DONE]\n\n"
        finally:
            if not job.result.done():
                chat.cancelled.set()  # the client left: stop its row

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def create_app(
    pipeline: LyricsPipeline,
    model_name: str,
    limits: ServerLimits | None = None,
    api_key: str | None = None,
    default_temperature: float = 0.0,
) -> FastAPI:
    """The FastAPI app. `default_temperature` applies when a request gives none (0: greedy, the
    paper's decoding; OpenAI's own default is 1)."""
    limits = limits or ServerLimits()
    if limits.max_aspect_ratio > pipeline.max_aspect_ratio:
        raise ValueError(
            f"ServerLimits.max_aspect_ratio={limits.max_aspect_ratio:g} is above the pipeline's "
            f"max_aspect_ratio={pipeline.max_aspect_ratio:g}; raise the pipeline's too"
        )
    state: dict[str, DynamicBatcher] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = DynamicBatcher(pipeline, limits.max_batch_size, limits.batch_window_ms, limits.max_concurrent, limits.queue_timeout_s)
        batcher.start()
        state["batcher"] = batcher
        try:
            yield
        finally:
            await batcher.close()

    app = FastAPI(title="Lyrics", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(BodyDeadline, timeout_s=limits.body_timeout_s)
    install_error_handlers(app)
    request_body, components = request_body_openapi(model_name, limits)

    @app.get("/health")
    async def health():
        batcher = state["batcher"]
        status = "ok" if batcher.healthy else ("shutting_down" if batcher.closed else "unhealthy")
        body = {"status": status, "model": model_name, **batch_stats(batcher), "max_batch_size": batcher.max_batch_size}
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request, api_key)
        return ModelList(data=[ModelCard(id=model_name, created=int(time.time()))]).model_dump()

    @app.post("/v1/chat/completions", openapi_extra={"requestBody": request_body})
    async def chat_completions(request: Request):
        authorize(request, api_key)
        raw = await read_body(request, limits.max_body_bytes)
        body = await asyncio.to_thread(parse_request, raw, limits)
        if body.model != model_name:
            raise APIError(404, f"model {body.model!r} does not exist; this server serves {model_name!r} (see /v1/models)", "model", "model_not_found")
        chat = await asyncio.to_thread(build_request, body, limits, pipeline, default_temperature)
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return await stream_answer(state["batcher"], chat, completion_id, created, model_name, include_usage)
        return await answer(state["batcher"], chat, completion_id, created, model_name)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    model_name: str | None = None,
    limits: ServerLimits | None = None,
    api_key: str | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    default_temperature: float = 0.0,
    log_level: str = "info",
    refiner: dict[str, Any] | None = None,
    quantize: str = "none",
) -> None:
    """Load the checkpoint and run uvicorn until interrupted (graceful: queued requests finish).
    The live refiner is the checkpoint's own; `refiner` holds explicit fields (`--refiner`);
    `quantize` is `--quantize` (`lyrics.inference.quantize`)."""
    import uvicorn

    from pathlib import Path

    pipeline = LyricsPipeline.from_pretrained(model, device=device, dtype=dtype, refiner=refiner, quantize=quantize)
    name = model_name or Path(model).resolve().name
    app = create_app(pipeline, name, limits, api_key, default_temperature)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30)


@contextmanager
def serve_in_background(app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> Iterator[str]:
    """Run `app` under uvicorn in a thread (a notebook, a test, a load bench): yields its base URL
    (`port=0` picks a free port) and shuts the server down gracefully when the block ends."""
    import socket

    import uvicorn

    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the server did not start on {host}:{port}")
            time.sleep(0.02)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)

