import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from lyrics.refiner.images import load_image

LIMIT = 10_000_000


def save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_rgb_image_loads_unchanged(tmp_path):
    image = Image.fromarray(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10)
    loaded = load_image(save(image, tmp_path / "a.png"), LIMIT)
    assert loaded.ok and loaded.reason is None and loaded.notes == []
    assert np.array_equal(np.asarray(loaded.image), np.asarray(image))


def test_one_pixel_image_is_fine(tmp_path):
    loaded = load_image(save(Image.new("RGB", (1, 1), (9, 8, 7)), tmp_path / "dot.png"), LIMIT)
    assert loaded.ok and loaded.image.size == (1, 1) and loaded.image.getpixel((0, 0)) == (9, 8, 7)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file (0 bytes)"),
        (b"<html>404 not found</html>\n", "not a recognised image format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a recognised image format"),
    ],
    ids=["zero-bytes", "text-named-jpg", "png-signature-only"],
)
def test_bad_bytes_give_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    loaded = load_image(path, LIMIT)
    assert not loaded.ok and loaded.image is None
    assert loaded.reason.startswith(reason)


def test_corrupt_png_data_is_rejected(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IDAT") + 40
    data[start : start + 200] = bytes(200)  # damage the compressed pixels (the CRC no longer matches)
    path = tmp_path / "broken.png"
    path.write_bytes(bytes(data))
    loaded = load_image(path, LIMIT)
    assert not loaded.ok and loaded.reason.startswith("corrupt or truncated image")


def test_missing_file(tmp_path):
    loaded = load_image(tmp_path / "nope.png", LIMIT)
    assert not loaded.ok and loaded.reason.startswith("cannot read file")


def test_truncated_jpeg_is_rejected(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # we rely on PIL raising, not padding with grey
    loaded = load_image(path, LIMIT)
    assert not loaded.ok and "truncated" in loaded.reason


def test_pixel_limit_is_checked_before_decoding(tmp_path, monkeypatch):
    path = save(Image.new("RGB", (120, 100)), tmp_path / "big.png")

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    loaded = load_image(path, max_pixels=11_999)
    assert not loaded.ok
    assert loaded.reason == "120x100 = 12000 pixels exceeds max_image_pixels=11999"


def test_pil_bomb_guard_becomes_a_reason(tmp_path, monkeypatch):
    path = save(Image.new("L", (100, 100)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL raises above twice this
    loaded = load_image(path, LIMIT)
    assert not loaded.ok and loaded.reason.startswith("decompression bomb")


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=100)
    loaded = load_image(path, LIMIT)
    assert loaded.ok and loaded.image.mode == "RGB" and "mode CMYK -> RGB" in loaded.notes
    r, g, b = loaded.image.getpixel((4, 4))
    assert r > 240 and g < 15 and b < 15  # pure red survives


def test_16_bit_grayscale_png_scales_to_8_bit(tmp_path):
    values = np.array([[0, 257 * 100], [65535, 257 * 7]], dtype=np.uint16)
    path = save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    loaded = load_image(path, LIMIT)
    assert loaded.ok and loaded.image.mode == "RGB"
    assert np.array_equal(np.asarray(loaded.image)[..., 0], np.array([[0, 100], [255, 7]]))
    assert np.array_equal(np.asarray(loaded.image)[..., 0], np.asarray(loaded.image)[..., 2])


def test_32_bit_integer_tiff(tmp_path):
    path = save(Image.fromarray(np.array([[5, 200]], dtype=np.int32), mode="I"), tmp_path / "int.tiff")
    loaded = load_image(path, LIMIT)
    assert loaded.ok and [loaded.image.getpixel((x, 0))[0] for x in range(2)] == [5, 200]


def test_palette_transparency_is_composited_on_white(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    path = save(image, tmp_path / "pal.png", transparency=1)
    loaded = load_image(path, LIMIT)
    assert loaded.ok and loaded.image.getpixel((0, 0)) == (255, 0, 0) and loaded.image.getpixel((1, 0)) == (255, 255, 255)


@pytest.mark.parametrize("mode, colour, expected", [("RGBA", (255, 0, 0, 128), (255, 127, 127)), ("LA", (0, 0), (255, 255, 255))])
def test_alpha_is_composited_on_white(tmp_path, mode, colour, expected):
    path = save(Image.new(mode, (3, 3), colour), tmp_path / f"{mode}.png")
    loaded = load_image(path, LIMIT)
    assert loaded.ok and loaded.image.mode == "RGB"
    assert all(abs(a - b) <= 1 for a, b in zip(loaded.image.getpixel((1, 1)), expected))


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (20, 10), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 4, 4))  # white block in the top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = save(image, tmp_path / "phone.jpg", exif=exif.tobytes(), quality=100)
    loaded = load_image(path, LIMIT)
    assert loaded.ok and loaded.image.size == (10, 20)
    assert loaded.notes == ["EXIF orientation 6 applied"]
    assert loaded.image.getpixel((8, 1))[0] > 200 and loaded.image.getpixel((1, 1))[0] < 50  # now top-right


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    loaded = load_image(path, LIMIT)
    assert loaded.ok and loaded.image.getpixel((0, 0)) == (255, 0, 0)
