"""What an inference surface accepts: size limits and safe decoding of uploaded images.

A server faces hostile input. Every image that reaches the model passes `decode_image`, which checks
the encoded size, then the pixel count from the header *before* decoding a pixel (a decompression bomb
costs a few bytes of reading), then normalises mode and EXIF orientation exactly as the refiner's batch
job does (`lyrics.refiner.images.to_rgb`), so a served answer sees the same pixels as training did.

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

from PIL import Image

from lyrics.refiner.images import load_image

MiB = 1 << 20


class InputError(ValueError):
    """Bad input from a caller; `param` names the request field it came from (OpenAI's error `param`)."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code


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

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_image_bytes", "max_image_pixels", "max_tokens", "default_max_tokens",
                     "max_concurrent", "max_batch_size", "max_messages", "max_text_chars"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"ServerLimits.{name} must be at least 1, got {getattr(self, name)}")
        self.default_max_tokens = min(self.default_max_tokens, self.max_tokens)


def decode_image(data: bytes, max_pixels: int, what: str = "image") -> Image.Image:
    """Encoded image bytes -> RGB `PIL.Image` with EXIF orientation applied, or `InputError`.

    Decoding is `lyrics.refiner.images.load_image` (the project's one decoder; pixel count checked
    from the header before decoding); its reasons become 4xx messages naming the request field.

    Args:
        data: the encoded file (PNG, JPEG, ...).
        max_pixels: reject images with more pixels, checked from the header before decoding.
        what: how the error messages name this image (e.g. "messages[0].content[1]").
    """
    loaded = load_image(data, max_pixels)
    if loaded.ok:
        return loaded.image
    reason = loaded.reason or "cannot decode"
    too_large = "max_image_pixels" in reason or "decompression bomb" in reason
    # The decoder's reasons are written for job logs; an API client gets them in its own terms.
    size = re.match(r"(\d+x\d+ = \d+ pixels) exceeds max_image_pixels=(\d+)", reason)
    if size:
        reason = f"image is {size.group(1)}, more than the limit of {size.group(2)}"
    elif reason.startswith("empty file"):
        reason = "empty image (0 bytes)"
    elif "not a recognised image format" in reason:
        reason = "not an image (the data is no known image format)"
    raise InputError(f"{what}: {reason}", code="image_too_large" if too_large else "invalid_image")


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
    return decode_image(data, limits.max_image_pixels, what)
