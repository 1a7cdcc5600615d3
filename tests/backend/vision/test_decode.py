"""decode_image: limits, truncation, EXIF orientation, mode; ImageCache round trip."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from backend.errors import ImageError
from backend.labelstudio.image_cache import ImageCache
from backend.vision.decode import decode_image

MAX_PIXELS = 50_000_000


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_decode_image_reads_real_photo_as_rgb(ena24_dir: Path) -> None:
    image = decode_image((ena24_dir / "2480.jpg").read_bytes(), max_pixels=MAX_PIXELS)
    assert image.mode == "RGB"
    assert image.width > 0 and image.height > 0


@pytest.mark.parametrize(
    "load_truncated", [pytest.param(False, id="pillow-default"), pytest.param(True, id="megadetector-global")]
)
@pytest.mark.parametrize("fmt", [pytest.param("JPEG", id="jpeg"), pytest.param("PNG", id="png")])
def test_decode_image_refuses_truncated_file(
    monkeypatch: pytest.MonkeyPatch, ena24_dir: Path, fmt: str, load_truncated: bool
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
    photo = Image.open(ena24_dir / "2480.jpg").convert("RGB").resize((400, 300))
    data = encode(photo, fmt)
    with pytest.raises(ImageError, match="truncated|corrupt"):
        decode_image(data[: len(data) // 2], max_pixels=MAX_PIXELS)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"<html>not found</html>", "not an image", id="html"),
        pytest.param(b"\xff\xd8\xff\xe0" + b"\x00" * 50, "unreadable|not an image|corrupt", id="broken-jpeg-header"),
    ],
)
def test_decode_image_refuses_non_image(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode_image(data, max_pixels=MAX_PIXELS)


def test_decode_image_refuses_too_many_pixels_before_decoding() -> None:
    data = encode(Image.new("RGB", (400, 300)), "PNG")
    with pytest.raises(ImageError, match="400x300 = 120000 pixels, over the limit of 100000"):
        decode_image(data, max_pixels=100_000)


def test_decode_image_applies_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(Image.new("RGB", (200, 100), (255, 0, 0)), "JPEG", exif=exif)
    assert decode_image(data, max_pixels=MAX_PIXELS).size == (100, 200)


@pytest.mark.parametrize(
    "mode", [pytest.param("RGBA", id="rgba"), pytest.param("L", id="grey"), pytest.param("P", id="palette")]
)
def test_decode_image_converts_mode_to_rgb(mode: str) -> None:
    data = encode(Image.new(mode, (20, 10)), "PNG")
    assert decode_image(data, max_pixels=MAX_PIXELS).mode == "RGB"


def test_image_cache_round_trip_keyed_by_reference(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "images")
    assert cache.get("http://ls/data/upload/1/a.jpg") is None
    cache.put("http://ls/data/upload/1/a.jpg", b"abc")
    assert cache.get("http://ls/data/upload/1/a.jpg") == b"abc"
    assert cache.get("http://ls/data/upload/1/b.jpg") is None
    path = cache.path_for("http://ls/data/upload/1/a.jpg")
    assert path.parent.parent == tmp_path / "images" and len(path.name) == 64
