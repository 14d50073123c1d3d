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
from dataclasses import dataclass
from typing import TypeVar

import anyio.to_thread
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from service.errors import BadImage, TooLarge

# The formats the service accepts; Pillow reads more (PSD, ICO, PCX...), which are refused to keep the
# decoders exposed to uploads few and well trodden. Tried in this order; JPEG opens MPO (phone JPEGs) too.
# AVIF (what recent phones and browsers save, decoded by libavif as browsers do) where Pillow has it: its
# wheels since 11.3 do.
_OPEN_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF") + (("AVIF",) if features.check("avif") else ())
ACCEPTED_FORMATS = ", ".join(name.replace("WEBP", "WebP") for name in _OPEN_FORMATS[:-1]) + f" or {_OPEN_FORMATS[-1]}"
INLINE_MAX_PIXELS = 64 * 64
T = TypeVar("T")
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's convert("L")
# Formats whose files carry an EXIF orientation worth honouring (phone photos).
_EXIF_FORMATS = frozenset({"JPEG", "MPO", "TIFF", "WEBP", "AVIF"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The pixel limit is ours, checked in ``open_checked`` from the header before anything is decoded, at the
# size the operator configured. Pillow's global guard (a warning past 89 MP, an error past 179 MP, raised
# inside Image.open) would override a larger configured limit and answer bombs in its own words, so it
# is switched off for this process, where every upload is opened through ``open_checked``.
Image.MAX_IMAGE_PIXELS = None


async def run_sized(pixels: int, function: Callable[..., T], *args: object, inline_max: int = INLINE_MAX_PIXELS) -> T:
    """Run ``function`` here if the work is small (``pixels``, or another size against ``inline_max``), else in a
    worker thread (see the module's docstring)."""
    if pixels <= inline_max:
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
        raise BadImage(f"the upload is empty: send an image file ({ACCEPTED_FORMATS}) in field 'file'")
    try:
        # Only the accepted formats' plugins look at the bytes: fewer decoders exposed, and no time spent
        # asking every other plugin whether it recognises them.
        image = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImage(
            f"the upload is not an image in an accepted format ({type(exc).__name__}): send {ACCEPTED_FORMATS}"
        ) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise BadImage(f"the image declares an empty size {width}×{height}")
    if width * height > max_pixels:
        raise _too_many_pixels(width, height, max_pixels)
    return image


def load_pixels(image: Image.Image) -> np.ndarray:
    """Decode an image from ``open_checked`` → H×W float32 grayscale in [0, 1] (what the bench's peers and
    the grey-only callers want): ``load_picture``, its colour planes weighted as Pillow's ``convert("L")``."""
    planes = load_picture(image).planes
    if planes.shape[0] == 1:
        return planes[0]
    return np.tensordot(_LUMA, planes, axes=1).astype(np.float32)


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


def encode_png(array: np.ndarray) -> bytes:
    """H×W float in [0, 1] → 8-bit grayscale PNG bytes."""
    return write_png(quantize(array))


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def write_png(pixels: np.ndarray) -> bytes:
    """H×W (grey) or H×W×C (grey and alpha, RGB, RGBA) uint8 or uint16 samples → PNG bytes.

    Written directly (signature, IHDR, one IDAT of unfiltered rows, IEND) rather than through Pillow:
    for the 28×28 images this service mostly answers, Pillow's save costs about six times the whole
    write (docs/benchmarks.md, "Serving costs"), and these PNGs are three fixed chunks. zlib level 1:
    on large images the default level costs several times as long for a few percent of size.
    """
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    depth = 16 if pixels.dtype == np.uint16 else 8
    samples = pixels.astype(">u2") if depth == 16 else pixels  # PNG stores 16-bit samples big-endian
    rows = np.zeros((height, 1 + width * channels * depth // 8), dtype=np.uint8)  # filter byte 0: none
    rows[:, 1:] = np.ascontiguousarray(samples).reshape(height, -1).view(np.uint8)
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]  # grey, grey and alpha, RGB, RGBA
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)),
            _png_chunk(b"IEND", b""),
        )
    )


def quantize16(array: np.ndarray) -> np.ndarray:
    """[0, 1] float → uint16, rounding to nearest."""
    return (np.clip(array, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)


@dataclass(frozen=True)
class Picture:
    """An upload as the models see it, and what it takes to answer in the same kind of image.

    ``planes`` are C×H×W float32 in [0, 1]: one grey plane or three RGB planes (a model denoises each as
    a grayscale image), laid over black where the upload is transparent, as a digit on a transparent
    canvas needs; ``alpha`` (H×W in [0, 1]) is handed back untouched; ``sixteen_bit`` answers a 16-bit
    grey upload in 16 bits.
    """

    planes: np.ndarray
    alpha: np.ndarray | None = None
    sixteen_bit: bool = False

    @property
    def height(self) -> int:
        return int(self.planes.shape[1])

    @property
    def width(self) -> int:
        return int(self.planes.shape[2])

    def with_planes(self, planes: np.ndarray) -> Picture:
        """The same kind of picture with other planes (the noisy or the denoised ones) of the same size."""
        return Picture(planes, self.alpha, self.sixteen_bit)

    def resized(self, size: tuple[int, int]) -> Picture:
        """Every plane and the alpha resized to (height, width), for a model of a fixed size."""
        if (self.height, self.width) == size:
            return self
        alpha = None if self.alpha is None else resize(self.alpha, size)
        return Picture(np.stack([resize(plane, size) for plane in self.planes]), alpha, self.sixteen_bit)


def to_picture(image: Image.Image) -> Picture:
    """Any mode → ``Picture``: grey modes one plane (16-bit and float ones kept in 16 bits), colour modes
    three; palette, CMYK and the like become RGB; an alpha channel is kept aside and the colour laid over it."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return Picture(np.clip(np.asarray(image, dtype=np.float32) / 65535.0, 0.0, 1.0)[None], None, True)
    if mode == "F":
        return Picture(np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0), 0.0, 1.0)[None], None, True)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("1", "LA", "La", "L"):
        image = image.convert("LA" if mode in ("LA", "La") else "L")
    elif mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if mode in _ALPHA_MODES else "RGB")
    pixels = np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
    if pixels.ndim == 2:
        return Picture(pixels[None])
    planes = np.moveaxis(pixels, -1, 0)
    if image.mode in ("LA", "RGBA"):
        alpha = planes[-1]
        return Picture(np.ascontiguousarray(planes[:-1] * alpha), alpha)
    return Picture(np.ascontiguousarray(planes))


def load_picture(image: Image.Image) -> Picture:
    """Decode an image from ``open_checked`` (its first frame, turned as its EXIF says); ``BadImage`` if corrupt."""
    try:
        image.load()
        if image.format in _EXIF_FORMATS:
            ImageOps.exif_transpose(image, in_place=True)
        return to_picture(image)
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise BadImage(f"the {image.format} image is truncated or corrupt: {exc}") from None


def encode_picture(planes: np.ndarray, alpha: np.ndarray | None, sixteen_bit: bool) -> bytes:
    """C×H×W planes in [0, 1] (and an alpha) → PNG bytes: grey (8 or 16 bits), grey and alpha, RGB or RGBA.

    Colour laid over black on the way in is taken back off the alpha here, so an opaque pixel is
    unchanged and a half-transparent one keeps its colour.
    """
    if alpha is not None:
        planes = np.where(alpha > 0, planes / np.maximum(alpha, 1e-6), 0.0)
    if planes.shape[0] == 1 and alpha is None:
        return write_png(quantize16(planes[0]) if sixteen_bit else quantize(planes[0]))
    channels = [*planes, alpha] if alpha is not None else list(planes)
    pixels = np.stack([quantize(channel) for channel in channels], axis=-1)
    return write_png(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
