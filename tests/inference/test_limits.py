"""Uploads: data URLs, size and pixel limits checked before decoding, normalisation, URL policy."""

import base64
import io

import pytest
from PIL import Image

from lyrics.inference.inputs import InputError, decode_image
from lyrics.inference.limits import ServerLimits, load_image_url, parse_data_url


def png(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def test_data_urls_decode_and_bad_ones_are_named():
    raw = png(Image.new("RGB", (8, 6), "red"))
    assert parse_data_url(data_url(raw), 10_000) == raw
    assert parse_data_url("data:;base64," + base64.b64encode(raw).decode(), 10_000) == raw
    cases = {
        "not-a-data-url": "malformed data URL",
        "data:text/plain;base64,aGk=": "media type 'text/plain'",
        "data:image/png,rawtext": "not base64-encoded",
        "data:image/png;base64,@@@@": "invalid base64",
        data_url(raw * 500): "more than the limit",
    }
    for url, message in cases.items():
        with pytest.raises(InputError, match=message):
            parse_data_url(url, 10_000, "messages[0].content[1].image_url")


def test_oversized_payload_is_refused_before_decoding():
    huge = "data:image/png;base64," + "A" * 4_000_000  # would be 3 MB
    with pytest.raises(InputError, match="about 3000000 bytes") as info:
        parse_data_url(huge, 1000)
    assert info.value.code == "image_too_large"


def test_pixel_limit_is_checked_from_the_header():
    data = png(Image.new("RGB", (300, 200), "white"))
    assert decode_image(data, 60_000).size == (300, 200)
    with pytest.raises(InputError, match="300x200 = 60000 pixels, more than the limit of 59999"):
        decode_image(data, 59_999)


@pytest.mark.parametrize(
    "data, message",
    [(b"", "empty image"), (b"GIF89a-not-really", "corrupt|not an image"), (b"hello world", "not an image")],
)
def test_broken_images_get_clear_errors(data, message):
    with pytest.raises(InputError, match=message):
        decode_image(data, 10_000)


def test_truncated_png_is_rejected():
    data = png(Image.effect_noise((64, 64), 50).convert("RGB"))
    with pytest.raises(InputError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2], 10_000)


def test_modes_and_exif_are_normalised():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent -> white background
    assert decode_image(png(rgba), 100).getpixel((0, 0)) == (255, 255, 255)
    cmyk = decode_image(png(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "TIFF"), 100)
    assert cmyk.mode == "RGB" and cmyk.getpixel((0, 0))[0] > 200
    rotated = Image.new("RGB", (20, 10), "blue")
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    assert decode_image(png(rotated, "JPEG", exif=exif.tobytes()), 1000).size == (10, 20)


def test_remote_and_local_urls_need_an_option(tmp_path):
    Image.new("RGB", (5, 5), "green").save(tmp_path / "a.png")
    closed = ServerLimits()
    with pytest.raises(InputError, match="remote image URLs are disabled") as info:
        load_image_url("http://127.0.0.1:9/a.png", closed, "messages[0].content[0].image_url")
    assert info.value.param == "messages[0].content[0].image_url"
    for url in (str(tmp_path / "a.png"), f"file://{tmp_path / 'a.png'}"):
        with pytest.raises(InputError, match="local file paths are disabled"):
            load_image_url(url, closed)
        assert load_image_url(url, ServerLimits(allow_local_files=True)).size == (5, 5)
    with pytest.raises(InputError, match="cannot read"):
        load_image_url(str(tmp_path / "missing.png"), ServerLimits(allow_local_files=True))
    with pytest.raises(InputError, match="unsupported URL scheme 'ftp'"):
        load_image_url("ftp://host/a.png", closed)


def test_limits_validate_themselves():
    assert ServerLimits(max_tokens=16).default_max_tokens == 16
    with pytest.raises(ValueError, match="max_batch_size"):
        ServerLimits(max_batch_size=0)


def test_remote_urls_are_fetched_when_allowed(tmp_path, monkeypatch):
    """A loopback-only HTTP server stands in for a remote host."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    import functools
    import http.server
    import threading

    Image.new("RGB", (6, 4), "red").save(tmp_path / "a.png")
    (tmp_path / "big.png").write_bytes(b"x" * 5000)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        allowed = ServerLimits(allow_remote_urls=True, max_image_bytes=4000, remote_timeout_s=5)
        assert load_image_url(f"{base}/a.png", allowed).size == (6, 4)
        with pytest.raises(InputError, match="larger than the limit of 4000"):
            load_image_url(f"{base}/big.png", allowed)
        with pytest.raises(InputError, match="HTTP 404"):
            load_image_url(f"{base}/missing.png", allowed)
    finally:
        server.shutdown()
        server.server_close()
