"""Image decode and encode: every promised format and mode to grayscale [0, 1], limits before decoding."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, features

from service.errors import BadImage, TooLarge
from service.images import decode_image, encode_png, open_checked, quantize, resize

GRADIENT = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (20, 1))  # 20×32, left dark to right bright
NOISE = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)  # incompressible
LIMIT = 1 << 22
# Pillow's wheels decode AVIF since 11.3 (the project's lower bound); a machine's own older Pillow may not.
NEEDS_AVIF = pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF decoder")


def saved(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose valid header claims ``width``×``height`` but whose data is a few bytes."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.mark.parametrize("format", ["PNG", "BMP", "TIFF", "WEBP", "GIF"])
def test_lossless_formats_decode_to_the_same_gray_levels(format: str) -> None:
    options = {"lossless": True} if format == "WEBP" else {}
    decoded = decode_image(saved(Image.fromarray(GRADIENT), format, **options), LIMIT)
    assert decoded.dtype == np.float32 and decoded.shape == GRADIENT.shape
    np.testing.assert_allclose(decoded, GRADIENT / 255.0, atol=1e-6)


@pytest.mark.parametrize("format", ["JPEG", pytest.param("AVIF", marks=NEEDS_AVIF)])
def test_lossy_formats_decode_close_to_the_original(format: str) -> None:
    decoded = decode_image(saved(Image.fromarray(GRADIENT).convert("RGB"), format, quality=95), LIMIT)
    assert decoded.shape == GRADIENT.shape
    assert np.abs(decoded - GRADIENT / 255.0).mean() < 0.02


@pytest.mark.parametrize(
    "mode,expected_mean",
    [
        ("RGB", 0.5),  # mid-gray in colour becomes mid-gray
        ("P", 0.5),
        ("CMYK", 0.5),
        ("1", 1.0),  # a bilevel image of white pixels
    ],
)
def test_any_mode_becomes_grayscale(mode: str, expected_mean: float) -> None:
    gray = Image.new("L", (10, 6), 255 if mode == "1" else 128)
    data = saved(gray.convert(mode), "TIFF" if mode == "CMYK" else "PNG")
    decoded = decode_image(data, LIMIT)
    assert decoded.shape == (6, 10)
    assert decoded.mean() == pytest.approx(expected_mean, abs=0.01)


def test_sixteen_bit_png_keeps_its_depth() -> None:
    pixels = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    decoded = decode_image(saved(Image.fromarray(pixels), "PNG"), LIMIT)
    np.testing.assert_allclose(decoded, pixels / 65535.0, atol=1e-6)


def test_float_tiff_is_clipped_to_the_unit_range() -> None:
    pixels = np.array([[-0.5, 0.25, 0.75, 3.0]], dtype=np.float32)
    decoded = decode_image(saved(Image.fromarray(pixels), "TIFF"), LIMIT)
    np.testing.assert_allclose(decoded, [[0.0, 0.25, 0.75, 1.0]])


def test_transparent_pixels_become_black_background() -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white everywhere...
    rgba[:2, :, 3] = 255  # ...but only the top half opaque
    decoded = decode_image(saved(Image.fromarray(rgba, "RGBA"), "PNG"), LIMIT)
    np.testing.assert_allclose(decoded[:2], 1.0)
    np.testing.assert_allclose(decoded[2:], 0.0)


def test_gif_gives_its_first_frame() -> None:
    frames = [Image.new("L", (8, 8), value) for value in (200, 10, 90)]
    data = saved(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    decoded = decode_image(data, LIMIT)
    assert decoded.mean() == pytest.approx(200 / 255, abs=0.01)


def test_jpeg_exif_orientation_is_applied() -> None:
    image = Image.fromarray(GRADIENT)  # 32 wide, 20 high
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    decoded = decode_image(saved(image, "JPEG", exif=exif), LIMIT)
    assert decoded.shape == (32, 20)


def test_a_header_claiming_too_many_pixels_is_refused_before_decoding() -> None:
    with pytest.raises(TooLarge, match="60000×60000"):
        open_checked(png_declaring(60000, 60000), LIMIT)


def test_the_pixel_limit_is_the_configured_one() -> None:
    data = saved(Image.new("L", (64, 64)), "PNG")
    assert decode_image(data, 64 * 64).shape == (64, 64)
    with pytest.raises(TooLarge, match="4096"):
        decode_image(data, 64 * 64 - 1)


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "empty"),
        (b"hello, this is not an image", "not an image"),
        (saved(Image.fromarray(NOISE), "PNG")[:400], "truncated or corrupt"),
        (saved(Image.new("L", (4, 4)), "ICO"), "not an image in an accepted format"),
    ],
    ids=["empty", "text", "truncated-png", "ico"],
)
def test_bad_uploads_raise_bad_image(data: bytes, message: str) -> None:
    with pytest.raises(BadImage, match=message):
        decode_image(data, LIMIT)


def test_png_encoding_round_trips_through_pillow() -> None:
    pixels = np.random.default_rng(0).random((13, 21), dtype=np.float32)
    image = Image.open(io.BytesIO(encode_png(pixels)))
    assert image.format == "PNG" and image.mode == "L" and image.size == (21, 13)
    np.testing.assert_array_equal(np.asarray(image), quantize(pixels))


def test_resize_returns_the_model_size_within_range() -> None:
    big = np.random.default_rng(1).random((300, 200), dtype=np.float32)
    small = resize(big, (28, 28))
    assert small.shape == (28, 28) and small.dtype == np.float32
    assert small.min() >= 0.0 and small.max() <= 1.0
    assert abs(small.mean() - big.mean()) < 0.02
