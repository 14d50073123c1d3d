"""Image decode and encode: upload bytes to a grayscale float array in [0, 1], and arrays back to PNG.

The pixel limit is checked before any pixel is decompressed, from the size the header declares (a
60000×60000 PNG is refused from its 33-byte header, never inflated); the byte limit was checked while
the body was read (``service.middleware.BodyLimitMiddleware``).

Where the work runs (``run_sized``): decoding, corrupting and encoding an image of at most
``INLINE_MAX_PIXELS`` happens on the event loop; anything larger goes to a worker thread. A hop to the
thread pool and back costs more than decoding or encoding a digit (docs/benchmarks.md, "Serving costs");
for large images the work (milliseconds) would stall every other request.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import BadImage, TooLarge

# The formats the service accepts; Pillow reads more (PSD, ICO, PCX...), which are refused to keep the
# decoders exposed to uploads few and well trodden. Tried in this order; JPEG opens MPO (phone JPEGs) too.
_OPEN_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF")
INLINE_MAX_PIXELS = 64 * 64
T = TypeVar("T")
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
# Formats whose files carry an EXIF orientation worth honouring (phone photos).
_EXIF_FORMATS = frozenset({"JPEG", "MPO", "TIFF", "WEBP"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The pixel limit is ours, checked in ``open_checked`` from the header before anything is decoded, at the
# size the operator configured. Pillow's global guard (a warning past 89 MP, an error past 179 MP, raised
# inside Image.open) would override a larger configured limit and answer bombs in its own words, so it
# is switched off for this process, where every upload is opened through ``open_checked``.
Image.MAX_IMAGE_PIXELS = None


async def run_sized(pixels: int, function: Callable[..., T], *args: object) -> T:
    """Run ``function`` here if the image is small, else in a worker thread (see the module's docstring)."""
    if pixels <= INLINE_MAX_PIXELS:
        return function(*args)
    return await anyio.to_thread.run_sync(function, *args)


def _too_many_pixels(width: int, height: int, max_pixels: int) -> TooLarge:
    return TooLarge(
        f"the image declares {width}×{height} = {width * height} pixels; the limit is {max_pixels}"
        " (DAE_MAX_IMAGE_PIXELS): send a smaller image"
    )


def open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open the upload lazily and check its declared size, before any pixel data is decoded."""
    if not data:
        raise BadImage("the upload is empty: send an image file (PNG, JPEG, BMP, TIFF, WebP or GIF) in field 'file'")
    try:
        # Only the accepted formats' plugins look at the bytes: fewer decoders exposed, and no time spent
        # asking every other plugin whether it recognises them.
        image = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImage(
            f"the upload is not an image in an accepted format ({type(exc).__name__}): send PNG, JPEG, BMP, "
            "TIFF, WebP or GIF"
        ) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise BadImage(f"the image declares an empty size {width}×{height}")
    if width * height > max_pixels:
        raise _too_many_pixels(width, height, max_pixels)
    return image


def to_gray_float(image: Image.Image) -> np.ndarray:
    """Any mode and bit depth → H×W float32 in [0, 1].

    16-bit images keep their depth (``convert("L")`` would clip them at 255); transparent images are
    laid over black, MNIST's background, so a digit drawn on a transparent canvas keeps its strokes.
    """
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return np.clip(np.asarray(image, dtype=np.float32) / 65535.0, 0.0, 1.0)
    if mode == "F":
        return np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0), 0.0, 1.0)
    if mode == "L":
        return np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        gray_alpha = np.asarray(image.convert("LA"), dtype=np.float32)
        return gray_alpha[..., 0] * gray_alpha[..., 1] * np.float32(1 / 255**2)
    return np.asarray(image.convert("L"), dtype=np.float32) * np.float32(1 / 255)


def load_pixels(image: Image.Image) -> np.ndarray:
    """Decode an image from ``open_checked`` → H×W float32 grayscale in [0, 1]; ``BadImage`` if corrupt."""
    try:
        image.load()  # the first frame of a GIF or multi-page TIFF: Image.open leaves frame 0 selected
        if image.format in _EXIF_FORMATS:
            ImageOps.exif_transpose(image, in_place=True)
        return to_gray_float(image)
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise BadImage(f"the {image.format} image is truncated or corrupt: {exc}") from None


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Upload bytes → H×W float32 grayscale in [0, 1]; ``BadImage`` (400) or ``TooLarge`` (413)."""
    return load_pixels(open_checked(data, max_pixels))


def resize(array: np.ndarray, size: tuple[int, int] | list[int]) -> np.ndarray:
    """Resize H×W float32 to ``size`` = (height, width); the aspect ratio is not kept (the model's size wins).

    Pillow's bilinear filter widens its support when shrinking, so a large photo is averaged down,
    not aliased, and never overshoots [0, 1] the way Lanczos can.
    """
    height, width = int(size[0]), int(size[1])
    if array.shape == (height, width):
        return array
    resized = Image.fromarray(array).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def quantize(array: np.ndarray) -> np.ndarray:
    """[0, 1] float → uint8, rounding to nearest."""
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def encode_png(array: np.ndarray) -> bytes:
    """H×W float in [0, 1] (or uint8) → 8-bit grayscale PNG bytes.

    Written directly (signature, IHDR, one IDAT, IEND) rather than through Pillow: for the 28×28 images
    this service mostly answers, Pillow's encoder set-up costs about four times the whole write, and a
    grayscale PNG is three fixed chunks. zlib level 1: on large images the default level costs several
    times as long for a few percent of size.
    """
    pixels = array if array.dtype == np.uint8 else quantize(array)
    height, width = pixels.shape
    rows = np.zeros((height, width + 1), dtype=np.uint8)  # each row starts with filter type 0 (none)
    rows[:, 1:] = pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit, grayscale, deflate, no interlace
    return b"".join(
        (
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)),
            _png_chunk(b"IEND", b""),
        )
    )
