import pytest
from PIL import Image

from lyrics.data.images import ImageError, decode_image_bytes, image_size, load_image


def test_exif_rotation_is_applied_to_pixels_and_size(tmp_path):
    image = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees: the displayed image is 20 x 40
    image.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (20, 40)
    assert image_size(tmp_path / "r.jpg") == (20, 40)


def test_modes_are_converted_and_bad_files_raise_with_a_reason(tmp_path):
    Image.new("LA", (5, 5)).save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png").mode == "RGB"
    (tmp_path / "t.jpg").write_text("hello")
    with pytest.raises(ImageError, match="not a recognised image format") as info:
        load_image(tmp_path / "t.jpg")
    assert info.value.path.endswith("t.jpg")
    with pytest.raises(ImageError, match="file not found"):
        image_size(tmp_path / "none.jpg")
    with pytest.raises(ImageError, match="corrupt or truncated image|not a recognised image format"):
        decode_image_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "shard:key")
