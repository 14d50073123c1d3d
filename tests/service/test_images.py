"""Image decode and encode: every promised format and mode to [0, 1], 16 bits kept, limits before decoding."""

from __future__ import annotations

import contextlib
import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms, features

from service.encoding import encode_picture, encode_png, quantize, quantize16
from service.errors import BadImage, TooLarge
from service.images import ACCEPTED_FORMATS, Picture, decode_image, load_picture, open_checked, resize
from tests.conftest import FIXTURE_ROOT
from tests.service.conftest import encoded, png_samples, wide_png, wide_tiff

GRADIENT = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (20, 1))  # 20×32, left dark to right bright
NOISE = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)  # incompressible
LIMIT = 1 << 22
# Pillow's wheels decode AVIF since 11.3 (the project's lower bound); a machine's own older Pillow may not.
NEEDS_AVIF = pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF decoder")
NEEDS_HEIF = pytest.mark.skipif("HEIC" not in ACCEPTED_FORMATS, reason="pi-heif does not load here")
# A 64×48 crop of the coffee photo saved by pillow-heif (quality 90) as a phone does: turned 90° clockwise by the
# file's own transform, with EXIF orientation 6 beside it, and a colour profile (littlecms's sRGB standing in for
# an iPhone's Display P3). pi-heif, what the service reads HEIC with, cannot write.
PHONE_HEIC = FIXTURE_ROOT / "phone" / "coffee-turned.heic"
# The same crop as a camera's 10-bit HEIF (Sony, Canon and Samsung save them), smoothed so that its levels fall
# between 8-bit ones, saved lossless by pillow-heif (RGB 4:4:4): ``coffee_levels`` is its 10-bit picture.
TEN_BIT_HEIC = FIXTURE_ROOT / "phone" / "coffee-10bit.heic"


def coffee_levels() -> np.ndarray:
    """The 10-bit levels (H×W×3) the 10-bit HEIC fixture was saved from, rebuilt from the coffee photo."""
    crop = Image.open(FIXTURE_ROOT / "colour" / "coffee.png").convert("RGB").crop((16, 24, 80, 72))
    smooth = crop.resize((128, 96), Image.Resampling.BICUBIC).resize((64, 48), Image.Resampling.BOX)
    return np.clip(np.round(np.asarray(smooth, dtype=np.float32) / 255 * 1023), 0, 1023)


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
    decoded = decode_image(encoded(Image.fromarray(GRADIENT), format, **options), LIMIT)
    assert decoded.dtype == np.float32 and decoded.shape == GRADIENT.shape
    np.testing.assert_allclose(decoded, GRADIENT / 255.0, atol=1e-6)


@pytest.mark.parametrize("format", ["JPEG", pytest.param("AVIF", marks=NEEDS_AVIF)])
def test_lossy_formats_decode_close_to_the_original(format: str) -> None:
    decoded = decode_image(encoded(Image.fromarray(GRADIENT).convert("RGB"), format, quality=95), LIMIT)
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
    data = encoded(gray.convert(mode), "TIFF" if mode == "CMYK" else "PNG")
    decoded = decode_image(data, LIMIT)
    assert decoded.shape == (6, 10)
    assert decoded.mean() == pytest.approx(expected_mean, abs=0.01)


def test_sixteen_bit_png_keeps_its_depth() -> None:
    pixels = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    decoded = decode_image(encoded(Image.fromarray(pixels), "PNG"), LIMIT)
    np.testing.assert_allclose(decoded, pixels / 65535.0, atol=1e-6)


def test_float_tiff_is_clipped_to_the_unit_range() -> None:
    pixels = np.array([[-0.5, 0.25, 0.75, 3.0]], dtype=np.float32)
    decoded = decode_image(encoded(Image.fromarray(pixels), "TIFF"), LIMIT)
    np.testing.assert_allclose(decoded, [[0.0, 0.25, 0.75, 1.0]])


def test_transparent_pixels_become_black_background() -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white everywhere...
    rgba[:2, :, 3] = 255  # ...but only the top half opaque
    decoded = decode_image(encoded(Image.fromarray(rgba, "RGBA"), "PNG"), LIMIT)
    np.testing.assert_allclose(decoded[:2], 1.0)
    np.testing.assert_allclose(decoded[2:], 0.0)


def test_gif_gives_its_first_frame() -> None:
    frames = [Image.new("L", (8, 8), value) for value in (200, 10, 90)]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    decoded = decode_image(data, LIMIT)
    assert decoded.mean() == pytest.approx(200 / 255, abs=0.01)


@NEEDS_HEIF
def test_a_heic_phone_photo_decodes_turned_and_close_to_the_original() -> None:
    picture = load_picture(open_checked(PHONE_HEIC.read_bytes(), LIMIT))
    crop = Image.open(FIXTURE_ROOT / "colour" / "coffee.png").convert("RGB").crop((16, 24, 80, 72))
    turned = np.moveaxis(np.asarray(crop.transpose(Image.Transpose.ROTATE_270), dtype=np.float32) / 255, -1, 0)
    assert picture.planes.shape == turned.shape == (3, 64, 48)
    assert np.abs(picture.planes - turned).mean() < 0.02  # 37.3 dB when this was written
    assert picture.icc_profile is not None  # through the child process (littlecms dates its profiles: not bytes)
    assert "sRGB" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(picture.icc_profile)))


@NEEDS_HEIF
def test_a_ten_bit_heic_keeps_its_ten_bits() -> None:
    """Pillow's HEIF plugin narrows 10 and 12 bits to 8; the decoder's child reads the samples again at their
    depth, and the picture is the 10-bit one, level for level (a 10-bit level is 64.06 16-bit ones)."""
    picture = load_picture(open_checked(TEN_BIT_HEIC.read_bytes(), LIMIT))
    assert picture.sixteen_bit and picture.planes.shape == (3, 48, 64)
    np.testing.assert_allclose(np.moveaxis(picture.planes, 0, -1) * 1023, coffee_levels(), atol=0.01)
    assert np.mean(coffee_levels() % 4 != 0) > 0.5  # levels no 8-bit picture holds


@NEEDS_AVIF
def test_every_byte_of_an_avif_damaged_gives_a_picture_or_a_400() -> None:
    """libavif's refusals reach Pillow's AVIF plugin as RuntimeError, at open or at load (a flipped byte in the
    item table: "Missing or empty image item"); each must be the client's 400, never a 500."""
    avif = encoded(Image.fromarray(GRADIENT).convert("RGB"), "AVIF")
    for index in range(len(avif)):
        damaged = bytearray(avif)
        damaged[index] ^= 0xFF
        with contextlib.suppress(BadImage, TooLarge):  # anything else fails the test
            load_picture(open_checked(bytes(damaged), LIMIT))


def test_jpeg_exif_orientation_is_applied() -> None:
    image = Image.fromarray(GRADIENT)  # 32 wide, 20 high
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    decoded = decode_image(encoded(image, "JPEG", exif=exif), LIMIT)
    assert decoded.shape == (32, 20)


def test_a_header_claiming_too_many_pixels_is_refused_before_decoding() -> None:
    with pytest.raises(TooLarge, match="60000×60000"):
        open_checked(png_declaring(60000, 60000), LIMIT)


@pytest.mark.parametrize(
    "size,limit,advice", [((4032, 3024), 2048 * 2048, "2364×1773"), ((100_000, 1), 4096, "4096×1")]
)
def test_the_413_says_what_size_would_fit(size: tuple[int, int], limit: int, advice: str) -> None:
    """A 12-megapixel phone photo against the default limit: the largest size of its shape that fits."""
    with pytest.raises(TooLarge, match=f"at most {advice} at this aspect ratio"):
        open_checked(png_declaring(*size), limit)


def test_the_pixel_limit_is_the_configured_one() -> None:
    data = encoded(Image.new("L", (64, 64)), "PNG")
    assert decode_image(data, 64 * 64).shape == (64, 64)
    with pytest.raises(TooLarge, match="4096"):
        decode_image(data, 64 * 64 - 1)


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "empty"),
        (b"hello, this is not an image", "not an image"),
        (encoded(Image.fromarray(NOISE), "PNG")[:400], "truncated or corrupt"),
        (encoded(Image.new("L", (4, 4)), "ICO"), "not an image in an accepted format"),
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


# Sixteen bits a sample in colour: Pillow narrows these to 8; service.images reads them with pypng and tifffile.
WIDE = np.random.default_rng(2).integers(0, 65536, (12, 20, 4), dtype=np.uint16)
SIXTEEN_BIT_LZW = FIXTURE_ROOT / "sixteen-bit" / "rgb48-lzw.tif"  # 24×16, made with tifffile and imagecodecs


def samples_of(picture: Picture) -> np.ndarray:
    """The picture's planes (alpha taken back off) and alpha as H×W×C uint16, as the upload held them."""
    channels = list(picture.planes)
    if picture.alpha is not None:
        channels = [np.where(picture.alpha > 0, c / np.maximum(picture.alpha, 1e-6), 0.0) for c in channels]
        channels.append(picture.alpha)
    return np.stack([quantize16(c) for c in channels], axis=-1)


@pytest.mark.parametrize(
    "data,channels",
    [
        (wide_png(WIDE[..., :3]), 3),
        (wide_png(WIDE), 4),
        (wide_png(WIDE[..., :2]), 2),  # grey and alpha: Pillow alone would make it RGBA
        (wide_tiff(WIDE[..., :3], photometric="rgb", compression="zlib"), 3),
        (wide_tiff(np.moveaxis(WIDE[..., :3], -1, 0).copy(), photometric="rgb", planarconfig="separate"), 3),
        (wide_tiff(WIDE, photometric="rgb", extrasamples=["unassalpha"]), 4),
    ],
    ids=["png-rgb", "png-rgba", "png-grey-alpha", "tiff-rgb-deflate", "tiff-rgb-planar", "tiff-rgba"],
)
def test_sixteen_bit_colour_and_alpha_keep_every_bit(data: bytes, channels: int) -> None:
    picture = load_picture(open_checked(data, LIMIT))
    assert picture.sixteen_bit and picture.planes.shape == (1 if channels < 3 else 3, 12, 20)
    assert (picture.alpha is not None) == (channels in (2, 4))
    opaque = WIDE[..., 3 if channels == 4 else 1, None] > 0 if channels in (2, 4) else np.True_
    np.testing.assert_array_equal(np.where(opaque, samples_of(picture), 0), np.where(opaque, WIDE[..., :channels], 0))


def test_a_sixteen_bit_colour_picture_round_trips_through_the_answers_png() -> None:
    picture = load_picture(open_checked(wide_png(WIDE[..., :3]), LIMIT))
    depth, samples = png_samples(encode_picture(picture.planes, picture))
    assert depth == 16
    np.testing.assert_array_equal(samples, WIDE[..., :3])


def deflated_zeros(megabytes: int) -> bytes:
    """A zlib stream of that many megabytes of zeros, about a thousandth of it in size."""
    compressor = zlib.compressobj(9)
    return b"".join([*(compressor.compress(bytes(1 << 20)) for _ in range(megabytes)), compressor.flush()])


def png_with_stream(samples_shape: tuple[int, int, int], stream: bytes) -> bytes:
    """A 16-bit RGB PNG of that size whose image data is ``stream``."""
    height, width, _ = samples_shape

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


@pytest.mark.parametrize("format", ["PNG", "TIFF"])
def test_a_sixteen_bit_file_whose_data_inflates_past_its_size_is_not_inflated_whole(format: str) -> None:
    """A 128 KB file declaring 64×64 16-bit RGB (24 KB of samples) whose compressed data inflates to 128 MB:
    pypng and tifffile would inflate all of it (a 1 GB one: 39 s and 3.8 GB, 4.5 s and 2 GB), Pillow stops at
    the image's size. The service answers it from far less memory than the stream holds."""
    bomb = deflated_zeros(128)
    if format == "PNG":
        data = png_with_stream((64, 64, 3), bomb)
    else:
        buffer = io.BytesIO()
        with tifffile.TiffWriter(buffer) as tiff:  # the stream as the one strip's Deflate data
            tiff.write(iter([bomb]), shape=(64, 64, 3), dtype=np.uint16, photometric="rgb", compression="zlib")
        data = buffer.getvalue()
    tracemalloc.start()
    try:
        picture = load_picture(open_checked(data, LIMIT))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert picture.planes.shape == (3, 64, 64)
    assert peak < 16 << 20, f"{peak >> 20} MB"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_sixteen_bit_tiff_is_turned_as_pillow_turns_its_8_bit_twin(orientation: int) -> None:
    tag = [(0x0112, "H", 1, orientation, True)]
    wide = load_picture(open_checked(wide_tiff(WIDE[..., :3], photometric="rgb", extratags=tag), LIMIT))
    narrow = (WIDE[..., :3] >> 8).astype(np.uint8)
    by_pillow = load_picture(open_checked(wide_tiff(narrow, photometric="rgb", extratags=tag), LIMIT))
    assert wide.sixteen_bit and wide.planes.shape == by_pillow.planes.shape
    np.testing.assert_allclose(wide.planes, by_pillow.planes, atol=1 / 255)


def test_a_sixteen_bit_lzw_tiff_is_read_by_pillow_at_8_bits() -> None:
    """LZW (tifffile needs imagecodecs for it, and its inflating is not bounded here): Pillow's 8 bits of the
    same image, still an answer."""
    picture = load_picture(open_checked(SIXTEEN_BIT_LZW.read_bytes(), LIMIT))
    y, x = np.mgrid[0:16, 0:24]
    expected = np.stack([x * 2700 + y * 37, y * 4000 + x * 11, (x * y * 150) % 65536]) / 65535
    assert picture.planes.shape == (3, 16, 24) and not picture.sixteen_bit
    np.testing.assert_allclose(picture.planes, expected, atol=1 / 255)


# A colour profile (a phone's Display P3, here littlecms's sRGB) describes what the pixel values mean: handed
# back on the answer, the colours show as they did; dropped, a P3 photo would show washed out.
RGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("format", ["PNG", "JPEG", "TIFF", "WEBP"])
def test_the_uploads_colour_profile_comes_back_on_the_answer(format: str) -> None:
    photo = Image.fromarray(GRADIENT).convert("RGB")
    picture = load_picture(open_checked(encoded(photo, format, icc_profile=RGB_PROFILE), LIMIT))
    assert picture.icc_profile == RGB_PROFILE
    answer = Image.open(io.BytesIO(encode_picture(picture.planes, picture)))
    assert answer.info.get("icc_profile") == RGB_PROFILE and answer.mode == "RGB"


def test_a_sixteen_bit_colour_tiffs_profile_comes_back_too() -> None:
    data = wide_tiff(WIDE[..., :3], photometric="rgb", iccprofile=RGB_PROFILE)
    picture = load_picture(open_checked(data, LIMIT))
    assert picture.sixteen_bit and picture.icc_profile == RGB_PROFILE
    assert Image.open(io.BytesIO(encode_picture(picture.planes, picture))).info.get("icc_profile") == RGB_PROFILE


def test_full_cyan_ink_is_the_cyan_its_cmyk_profile_says_not_the_formulas() -> None:
    """100 % cyan on coated paper (FOGRA39) is sRGB 0, 159, 227; without a profile Pillow's formula makes it 0, 255,
    255, as a browser shows an untagged CMYK file. JPEG and TIFF, which both carry CMYK and its profile."""
    cyan = Image.new("CMYK", (8, 6), (255, 0, 0, 0))
    profile = (FIXTURE_ROOT / "print" / "fogra39-low.icc").read_bytes()
    for format in ("JPEG", "TIFF"):
        picture = load_picture(open_checked(encoded(cyan, format, icc_profile=profile), LIMIT))
        np.testing.assert_allclose(picture.planes.mean(axis=(1, 2)) * 255, (0, 159, 227), atol=3)
        assert picture.icc_profile is None and picture.alpha is None  # sRGB now: an untagged image is taken as sRGB
        untagged = load_picture(open_checked(encoded(cyan, format), LIMIT))
        np.testing.assert_allclose(untagged.planes.mean(axis=(1, 2)) * 255, (0, 255, 255), atol=3)


def test_a_profile_that_no_longer_describes_the_pixels_is_dropped() -> None:
    """An RGB profile on a grey image (a malformed file), a CMYK image's profile once it is RGB."""
    grey = load_picture(open_checked(encoded(Image.fromarray(GRADIENT), "PNG", icc_profile=RGB_PROFILE), LIMIT))
    assert grey.icc_profile is None
    assert "icc_profile" not in Image.open(io.BytesIO(encode_picture(grey.planes, grey))).info
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()  # not a CMYK one, but not RGB either
    cmyk = encoded(Image.fromarray(GRADIENT).convert("CMYK"), "TIFF", icc_profile=lab)
    assert load_picture(open_checked(cmyk, LIMIT)).icc_profile is None
