"""What `lyrics serve` accepts: its size limits, image URLs, and request bodies.

A server faces hostile input. Every image that reaches the model is decoded by
`lyrics.inference.inputs.decode_image` (sizes, pixel count and aspect ratio checked from the header
before a pixel is decoded); here are the limits it is given, the URL forms a request may use, and the
JSON parser.

Request bodies are parsed by `parse_json`: standard JSON only (no NaN / Infinity literals), with a
nesting limit checked before any recursive Python code (pydantic, our own) walks the data.

Image references in requests follow the OpenAI convention (`image_url.url`): `data:` URLs are always
accepted; remote `http(s)` URLs and local files only when the server was started with
`--allow-remote-urls` / `--allow-local-files`, because both let a caller make the server reach things
(other hosts, its own disk) on the caller's behalf.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic_core
from PIL import Image

from lyrics.inference.inputs import InputError, decode_image

MiB = 1 << 20


@dataclass
class ServerLimits:
    """Limits of `lyrics serve` (each one is a CLI flag).

    Args:
        max_body_bytes: largest request body; larger ones get 413 before they are parsed.
        max_image_bytes: largest encoded image (after base64 decoding, or downloaded).
        max_image_pixels: largest width x height, checked from the image header before decoding.
        max_tokens: cap on `max_tokens`; a request asking for more gets 400 (not a silent clamp).
        default_max_tokens: `max_tokens` of a request that gives none (at most the cap).
        max_concurrent: requests queued or running at once; the next one gets 429.
        max_batch_size: requests merged into one model call by the dynamic batcher (1 turns it off).
        batch_window_ms: how long the batcher waits for more requests after the first one.
        queue_timeout_s: a request still queued after this long gets 503 (the server is overloaded).
        max_messages: messages per request.
        max_text_chars: characters of text per request, all messages together.
        allow_remote_urls: fetch `http(s)` image URLs (off: only `data:` URLs).
        allow_local_files: read `file://` URLs and plain paths on the server's disk.
        remote_timeout_s: timeout for fetching a remote image.
        max_aspect_ratio: longest side / shortest side of an image; beyond it 400. It bounds what the
            image processor allocates (see the module docstring); 20 still passes panoramas and long
            screenshots, whose centre crop the encoder sees anyway.
        max_json_depth: deepest nesting of arrays and objects in a request body; beyond it 400. A
            request needs 6 levels (an image part); 32 leaves room for fields we ignore.
        body_timeout_s: a request body must arrive in full within this many seconds of the request's
            start; a stalled or trickling client gets 408 and the connection is closed.
    """

    max_body_bytes: int = 20 * MiB
    max_image_bytes: int = 10 * MiB
    max_image_pixels: int = 4096 * 4096
    max_tokens: int = 512
    default_max_tokens: int = 128
    max_concurrent: int = 64
    max_batch_size: int = 8
    batch_window_ms: float = 10.0
    queue_timeout_s: float = 120.0
    max_messages: int = 64
    max_text_chars: int = 32_000
    allow_remote_urls: bool = False
    allow_local_files: bool = False
    remote_timeout_s: float = 10.0
    max_aspect_ratio: float = 20.0
    max_json_depth: int = 32
    body_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_image_bytes", "max_image_pixels", "max_tokens", "default_max_tokens",
                     "max_concurrent", "max_batch_size", "max_messages", "max_text_chars", "max_aspect_ratio", "max_json_depth"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"ServerLimits.{name} must be at least 1, got {getattr(self, name)}")
        if self.max_json_depth > 200:
            raise ValueError(f"ServerLimits.max_json_depth must be at most 200 (the JSON parser's own cap), got {self.max_json_depth}")
        if not self.body_timeout_s > 0:
            raise ValueError(f"ServerLimits.body_timeout_s must be positive, got {self.body_timeout_s}")
        self.default_max_tokens = min(self.default_max_tokens, self.max_tokens)

    @classmethod
    def from_cli(cls, flags: dict[str, Any]) -> "ServerLimits":
        """The limits from `lyrics serve`'s flags: each flag is a field's name, except the sizes in MiB
        and the timeouts without their `_s` (`CLI_FLAGS`). Flags that are not limits are ignored."""
        values = {}
        for name in cls.__dataclass_fields__:
            flag, scale = CLI_FLAGS.get(name, (name, None))
            if flag in flags:
                values[name] = int(flags[flag] * scale) if scale else flags[flag]
        return cls(**values)


# `lyrics serve` flags that differ from their `ServerLimits` field: field -> (flag, scale to the field).
CLI_FLAGS: dict[str, tuple[str, int | None]] = {
    "max_body_bytes": ("max_body_mb", MiB),
    "max_image_bytes": ("max_image_mb", MiB),
    "queue_timeout_s": ("queue_timeout", None),
    "body_timeout_s": ("body_timeout", None),
    "remote_timeout_s": ("remote_timeout", None),
}


_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)


def parse_data_url(url: str, max_bytes: int, what: str = "image_url") -> bytes:
    """The payload of a `data:[<mime>][;base64],<data>` URL, checked for size before decoding."""
    match = _DATA_URL.match(url)
    if match is None:
        raise InputError(f"{what}: malformed data URL (expected data:image/<type>;base64,<data>)", code="invalid_image_url")
    mime = (match.group("mime") or "").lower()
    if mime and not mime.startswith("image/"):
        raise InputError(f"{what}: data URL has media type {mime!r}, expected an image/* type", code="invalid_image_url")
    payload = url[match.end():]
    if not match.group("b64"):
        raise InputError(f"{what}: data URL is not base64-encoded (add ';base64')", code="invalid_image_url")
    # 4 base64 characters carry 3 bytes: reject oversized payloads before allocating the decoded copy.
    if len(payload) // 4 * 3 > max_bytes + 3:
        raise InputError(f"{what}: image is about {len(payload) // 4 * 3} bytes, more than the limit of {max_bytes}", code="image_too_large")
    try:
        data = base64.b64decode(re.sub(r"\s+", "", payload), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{what}: invalid base64 in data URL", code="invalid_base64") from None
    if len(data) > max_bytes:
        raise InputError(f"{what}: image is {len(data)} bytes, more than the limit of {max_bytes}", code="image_too_large")
    return data


def fetch_remote(url: str, max_bytes: int, timeout_s: float, what: str = "image_url") -> bytes:
    """Download an `http(s)` image, stopping as soon as it passes `max_bytes` (for --allow-remote-urls)."""
    import httpx

    try:
        with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=True) as response:
            if response.status_code != 200:
                raise InputError(f"{what}: fetching {url} gave HTTP {response.status_code}", code="invalid_image_url")
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise InputError(f"{what}: {url} is larger than the limit of {max_bytes} bytes", code="image_too_large")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise InputError(f"{what}: cannot fetch {url} ({type(exc).__name__}: {exc})", code="invalid_image_url") from None
    return b"".join(chunks)


def read_local(path: str, max_bytes: int, what: str = "image_url") -> bytes:
    """Read an image file from the server's disk (for --allow-local-files)."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if not file.is_file():
            raise InputError(f"{what}: {path} is not a file", code="invalid_image_url")
        if size > max_bytes:
            raise InputError(f"{what}: {path} is {size} bytes, more than the limit of {max_bytes}", code="image_too_large")
        return file.read_bytes()
    except OSError as exc:
        raise InputError(f"{what}: cannot read {path} ({exc.strerror or exc})", code="invalid_image_url") from None


def load_image_url(url: str, limits: ServerLimits, what: str = "image_url") -> Image.Image:
    """Resolve an OpenAI `image_url.url` to an RGB image under `limits`."""
    try:
        return _load_image_url(url, limits, what)
    except InputError as exc:
        exc.param = exc.param or what
        raise


def _load_image_url(url: str, limits: ServerLimits, what: str) -> Image.Image:
    if not isinstance(url, str) or not url:
        raise InputError(f"{what}: empty image URL")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        data = parse_data_url(url, limits.max_image_bytes, what)
    elif scheme in ("http", "https"):
        if not limits.allow_remote_urls:
            raise InputError(
                f"{what}: remote image URLs are disabled on this server; send the image inline as a "
                "data:image/...;base64 URL (or start the server with --allow-remote-urls)",
                code="remote_urls_disabled",
            )
        data = fetch_remote(url, limits.max_image_bytes, limits.remote_timeout_s, what)
    elif scheme == "file" or scheme == "" or (len(scheme) == 1 and url[1:3] in (":\\", ":/")):
        if not limits.allow_local_files:
            raise InputError(
                f"{what}: local file paths are disabled on this server; send the image inline as a "
                "data:image/...;base64 URL (or start the server with --allow-local-files)",
                code="local_files_disabled",
            )
        data = read_local(url[len("file://"):] if scheme == "file" else url, limits.max_image_bytes, what)
    else:
        raise InputError(f"{what}: unsupported URL scheme {scheme!r} (use a data: URL)", code="invalid_image_url")
    return decode_image(data, limits.max_image_pixels, what, limits.max_aspect_ratio)


# --- request bodies -------------------------------------------------------------------------------
def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether arrays / objects nest deeper than `limit` (the top level is depth 1). Iterative, so
    it cannot overflow the stack whatever the input."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def parse_json(raw: bytes, max_depth: int) -> Any:
    """A request body -> Python data, or `InputError`.

    pydantic-core's parser (Rust, linear time, its own recursion cap of 200) reads the bytes, so no
    depth can overflow a stack while parsing; `max_depth` is then checked without recursion, before
    pydantic validation or any other recursive code sees the data. NaN and Infinity literals, which
    Python's `json` would accept, are refused as the JSON standard does.
    """
    try:
        value = pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        if "recursion limit" in str(exc):
            raise InputError(f"request body nests arrays/objects more than {max_depth} levels deep", code="json_too_deep") from None
        raise InputError(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    # Cheap exit: a body with at most `max_depth` openers cannot nest deeper (the usual case).
    if raw.count(b"[") + raw.count(b"{") > max_depth and json_depth_exceeds(value, max_depth):
        raise InputError(f"request body nests arrays/objects more than {max_depth} levels deep", code="json_too_deep")
    return value
