"""Encoding answers: planes of floats in [0, 1] back to the bytes of the kind of image that came in.

PNG (lossless, any kind: grey, grey and alpha, RGB, RGBA, 8 or 16 bits, with the upload's colour profile and
EXIF) is written here directly; JPEG and WebP, for a client that asks for them (``Accept``), through Pillow.
Decoding is ``service.images``'.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from service.images import Picture
from service.metadata import png_exif

# A JPEG's EXIF is one APP1 segment, at most 65,535 bytes with its 2-byte length (Pillow refuses more: "EXIF data
# is too long"); a PNG's or WebP's may be longer, and a JPEG answer goes without it then.
JPEG_MAX_EXIF = 65533
# What an answer can be encoded as, by media type (``Accept``): PNG, lossless and of any kind, the default and
# JSON's; or, for a client that would rather have a smaller file, JPEG (8 bits, no alpha) or WebP (8 bits, alpha
# kept), both lossy at ``ANSWER_QUALITY`` (JPEG without chroma subsampling, so colour edges stay sharp).
ANSWER_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
ANSWER_QUALITY = 95
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def quantize(array: np.ndarray) -> np.ndarray:
    """[0, 1] float → uint8, rounding to nearest."""
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def quantize16(array: np.ndarray) -> np.ndarray:
    """[0, 1] float → uint16, rounding to nearest."""
    return (np.clip(array, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)


def encode_png(array: np.ndarray) -> bytes:
    """H×W float in [0, 1] → 8-bit grayscale PNG bytes."""
    return write_png(quantize(array))


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def write_png(pixels: np.ndarray, icc_profile: bytes | None = None, exif: bytes | None = None) -> bytes:
    """H×W (grey) or H×W×C (grey and alpha, RGB, RGBA) uint8 or uint16 samples → PNG bytes, with the colour
    profile in an iCCP chunk and the EXIF in an eXIf chunk when there are.

    Written directly (signature, IHDR, one IDAT of unfiltered rows, IEND) rather than through Pillow:
    for the 28×28 images this service mostly answers, Pillow's save costs about twice the whole
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
    # iCCP: a profile name, a null, compression method 0 (zlib), the compressed profile; before IDAT.
    profile = () if icc_profile is None else (_png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(icc_profile)),)
    metadata = () if exif is None else (_png_chunk(b"eXIf", png_exif(exif)),)  # before IDAT, where readers look
    return b"".join(
        (
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            *profile,
            *metadata,
            _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)),
            _png_chunk(b"IEND", b""),
        )
    )


def encode_picture(planes: np.ndarray, kind: Picture) -> bytes:
    """C×H×W planes in [0, 1] → a PNG of ``kind``'s kind: grey, grey and alpha, RGB or RGBA (``kind``'s alpha),
    of 8 or 16 bits, with ``kind``'s colour profile."""
    return write_png(_samples(planes, kind, kind.sixteen_bit, with_alpha=True), kind.icc_profile, kind.exif)


def encode_answer(planes: np.ndarray, kind: Picture, media_type: str = "image/png") -> bytes:
    """``planes`` in the ``ANSWER_TYPES`` format asked for: ``encode_picture``'s PNG, or an 8-bit JPEG (no alpha:
    the picture as laid over black) or WebP, lossy at quality 95, with ``kind``'s colour profile."""
    if media_type == "image/png":
        return encode_picture(planes, kind)
    jpeg = media_type == "image/jpeg"
    buffer = io.BytesIO()
    options: dict[str, object] = {"quality": ANSWER_QUALITY, **({"subsampling": 0} if jpeg else {})}
    if kind.icc_profile is not None:
        options["icc_profile"] = kind.icc_profile
    if kind.exif is not None and not (jpeg and len(kind.exif) > JPEG_MAX_EXIF):
        options["exif"] = kind.exif
    samples = _samples(planes, kind, sixteen_bit=False, with_alpha=not jpeg)
    Image.fromarray(samples).save(buffer, format=ANSWER_TYPES[media_type], **options)
    return buffer.getvalue()


def _samples(planes: np.ndarray, kind: Picture, sixteen_bit: bool, with_alpha: bool) -> np.ndarray:
    """H×W or H×W×C integer samples of ``planes``, and of ``kind``'s alpha when ``with_alpha``.

    Colour laid over black on the way in is taken back off the alpha here, so an opaque pixel is
    unchanged and a half-transparent one keeps its colour.
    """
    alpha = kind.alpha if with_alpha else None
    if alpha is not None:
        planes = np.where(alpha > 0, planes / np.maximum(alpha, 1e-6), 0.0)
    to_samples = quantize16 if sixteen_bit else quantize
    if planes.shape[0] == 1 and alpha is None:
        return to_samples(planes[0])
    channels = [*planes, alpha] if alpha is not None else list(planes)
    pixels = np.stack([to_samples(channel) for channel in channels], axis=-1)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels
