"""Image decoding: upload bytes to a ``Picture``, planes of floats in [0, 1] (grey or colour, 8 or 16 bits) with
what it takes to answer in the same kind of image (``service.encoding`` writes the answer).

The pixel limit is checked before any pixel is decompressed, from the size the header declares (a
60000×60000 PNG is refused from its 33-byte header, never inflated); the byte limit was checked while
the body was read (``service.middleware.BodyLimitMiddleware``). A HEIC is opened, checked and decoded in a
child process (``open_checked``, ``service.decode_process``): its decoder crashed on fuzzed files. A CMYK image
with a colour profile is converted to sRGB through it, there too (``service.cmyk``).

Where the work runs (``run_sized``): decoding, corrupting and encoding an image of at most
``INLINE_MAX_PIXELS`` happens on the event loop; anything larger goes to a worker thread. A hop to the
thread pool and back costs as much as the work itself for a digit (78 µs, against 92 to decode a 28×28 PNG
and 39 to encode one: docs/benchmarks.md, "Serving costs"); for large images the work (milliseconds) would
stall every other request.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import anyio
import anyio.to_thread
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from service.cmyk import cmyk_profile, to_srgb
from service.decode_process import DECODE_PROCESS, DecoderFailed
from service.errors import BadImage, TooLarge
from service.metadata import answer_exif, profile_for
from service.sixteen_bit import DECODED_SAMPLES, wide_samples


def _heic_reader() -> bool:
    """Whether HEIC (what iPhones save) can be read: pi-heif, pillow-heif's decoder alone (libheif and
    libde265, LGPL), without its encoder (x265, GPL), which a service that only reads HEIC has no use for.
    A dependency, but a machine's own older Pillow (the GPU machine's) may not take it: the service then does
    without HEIC, as it does without AVIF on a Pillow that lacks it."""
    try:
        import pi_heif

        # The primary picture only: thumbnails, depth maps and other auxiliary images are not read.
        pi_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
    except Exception:  # an ImportError, or whatever an incompatible build raises while registering
        return False
    return True


# The formats the service accepts; Pillow reads more (PSD, ICO, PCX...), which are refused to keep the
# decoders exposed to uploads few and well trodden. Tried in this order; JPEG opens MPO (phone JPEGs) too.
# AVIF (what recent phones and browsers save, decoded by libavif as browsers do) where Pillow has it: its
# wheels since 11.3 do. HEIC is not among them: the server never opens one (``open_checked``).
_OPEN_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF") + (("AVIF",) if features.check("avif") else ())
_READS_HEIC = _heic_reader()
_SHOWN = [name.replace("WEBP", "WebP") for name in _OPEN_FORMATS] + (["HEIC"] if _READS_HEIC else [])
ACCEPTED_FORMATS = ", ".join(_SHOWN[:-1]) + f" or {_SHOWN[-1]}"
# ISO-BMFF brands of HEVC-coded HEIF (pi-heif's list); AVIF shares the container with other brands.
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
INLINE_MAX_PIXELS = 64 * 64
# What Pillow's decoders (and pi-heif's: RuntimeError for a file libheif will not decode, past its own limits say;
# EOFError for a cut stream) raise on a file that is truncated or corrupt.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, MemoryError, RuntimeError)
T = TypeVar("T")
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's convert("L")
# Formats whose files carry an EXIF orientation worth honouring (phone photos).
_EXIF_FORMATS = frozenset({"JPEG", "MPO", "TIFF", "WEBP", "AVIF"})

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
        f" (DAE_MAX_IMAGE_PIXELS): send a smaller image, at most {_fitting(width, height, max_pixels)} at this"
        " aspect ratio"
    )


def _fitting(width: int, height: int, max_pixels: int) -> str:
    """The largest W×H of (about) the same shape within the limit, for the 413's advice."""
    scale = math.sqrt(max_pixels / (width * height))
    fit_width, fit_height = math.floor(width * scale), math.floor(height * scale)
    if fit_width < 1 or fit_height < 1:  # a strip thinner than the scale: one pixel across, the rest along
        fit_width, fit_height = (1, min(height, max_pixels)) if width < height else (min(width, max_pixels), 1)
    while fit_width * fit_height > max_pixels:  # floating point may round a side up by one
        fit_width, fit_height = (fit_width - 1, fit_height) if fit_width > fit_height else (fit_width, fit_height - 1)
    return f"{fit_width}×{fit_height}"


def open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open the upload lazily and check its declared size, before any pixel data is decoded.

    A HEIC is opened and decoded whole in the child process of ``service.decode_process`` (this blocks for as
    long: the server calls ``open_upload``), since libheif crashed the process on files a fuzzer made; what
    comes back is the decoded picture, the size its header declared.
    """
    if _is_heic(data):
        return _open_heic(data, max_pixels)
    image = _open(data, max_pixels, _OPEN_FORMATS)
    profile = cmyk_profile(image)
    return image if profile is None else _cmyk_to_srgb(image, profile)


# The child works on one file at a time, and the thread that sent one waits for it: without a limiter of their own,
# a burst of HEIC (a 12-megapixel one takes 1.8 s) or profiled CMYK uploads would hold every thread of anyio's
# pool, which every large image's decode and encode needs (``run_sized``). Two: one in the child, the next ready.
_CHILD_WAITS = anyio.CapacityLimiter(2)


async def open_upload(data: bytes, max_pixels: int) -> Image.Image:
    """``open_checked`` for the event loop: a trip to the child process (a HEIC's decode, a CMYK profile's
    conversion) waits in a worker thread."""
    if _is_heic(data):
        return await anyio.to_thread.run_sync(_open_heic, data, max_pixels, limiter=_CHILD_WAITS)
    image = _open(data, max_pixels, _OPEN_FORMATS)
    profile = cmyk_profile(image)
    if profile is None:
        return image
    return await anyio.to_thread.run_sync(_cmyk_to_srgb, image, profile, limiter=_CHILD_WAITS)


def _cmyk_to_srgb(image: Image.Image, profile: bytes) -> Image.Image:
    """A CMYK image with its own profile, decoded and turned as its EXIF says here, converted in the child."""
    _load(image)
    return to_srgb(image, profile)


def _open(data: bytes, max_pixels: int, formats: tuple[str, ...]) -> Image.Image:
    if not data:
        raise BadImage(f"the upload is empty: send an image file ({ACCEPTED_FORMATS}) in field 'file' or as the body")
    try:
        # Only the accepted formats' plugins look at the bytes: fewer decoders exposed, and no time spent
        # asking every other plugin whether it recognises them.
        image = Image.open(io.BytesIO(data), formats=formats)
    # RuntimeError: what Pillow's AVIF plugin raises at open for a damaged file libavif will not parse
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, RuntimeError) as exc:
        raise BadImage(
            f"the upload is not an image in an accepted format ({type(exc).__name__}): send {ACCEPTED_FORMATS}"
        ) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise BadImage(f"the image declares an empty size {width}×{height}")
    if width * height > max_pixels:
        raise _too_many_pixels(width, height, max_pixels)
    return image


def _is_heic(data: bytes) -> bool:
    """A HEIC, told from its first box (``ftyp``: the major brand and the compatible ones) without libheif."""
    if not _READS_HEIC or data[4:8] != b"ftyp":
        return False
    size = int.from_bytes(data[:4], "big")  # the box: size, "ftyp", major brand, minor version, compatible brands
    brands = {data[8:12]} | {data[i : i + 4] for i in range(16, min(size, len(data), 256), 4)}
    return bool(brands & _HEIC_BRANDS) and not brands & _AVIF_BRANDS


def _open_heic(data: bytes, max_pixels: int) -> Image.Image:
    try:
        return DECODE_PROCESS.call(_decode_heic_here, data, max_pixels, pixels=max_pixels, counted_as="heic")
    except DecoderFailed as exc:
        raise BadImage(
            f"the HEIC image could not be decoded: {exc} (a corrupt file?); send it as JPEG or PNG"
        ) from None


def _decode_heic_here(data: bytes, max_pixels: int) -> Image.Image:
    """In the child: open, check the declared size, decode once (libheif turns the picture as the file says),
    and hand back a plain decoded image of the declared size (a file may decode to another). A 10- or 12-bit
    file is decoded at its depth, its samples handed back beside an 8-bit picture made from them."""
    image = _open(data, max_pixels, ("HEIF",))
    width, height = image.size
    bit_depth = image.info.get("bit_depth", 8)
    wide = _heic_samples(data, bit_depth, image.size) if isinstance(bit_depth, int) and 8 < bit_depth <= 16 else None
    if wide is not None:
        narrow = ((wide.astype(np.uint32) + 128) // 257).astype(np.uint8)  # 16 bits → 8, rounded
        decoded = Image.fromarray(narrow[..., 0] if narrow.shape[-1] == 1 else narrow)
        decoded.info[DECODED_SAMPLES] = wide
    else:
        _load(image)
        if image.size != (width, height):
            raise BadImage(f"the HEIC image declares {width}×{height} but decodes to {image.width}×{image.height}")
        decoded = Image.frombytes(image.mode, image.size, image.tobytes())
    for key in ("icc_profile", "exif"):
        if key in image.info:
            decoded.info[key] = image.info[key]
    return decoded


def _heic_samples(data: bytes, bit_depth: int, size: tuple[int, int]) -> np.ndarray | None:
    """A HEIC of ``bit_depth`` > 8 (a camera's 10 or 12 bits: Pillow's plugin narrows it to 8) decoded at its
    depth, as H×W×C uint16 over the full 16-bit range; None where that picture is not the one of ``size`` (Pillow's
    plugin decodes it then, at 8 bits)."""
    import pi_heif

    try:
        heif = pi_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
        raw = np.asarray(heif) if heif.size == size else None  # the primary picture, in the top bits of 16
    # libheif's refusals: Pillow's plugin has its own try at 8 bits, and its refusal is the client's 400
    except _DECODE_ERRORS:
        return None
    if raw is None or raw.dtype != np.uint16 or raw.shape[:2] != size[::-1]:
        return None
    samples = (raw >> (16 - bit_depth)).astype(np.float32) * np.float32(65535 / (2**bit_depth - 1))
    return np.round(samples).astype(np.uint16).reshape(raw.shape[0], raw.shape[1], -1)


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


@dataclass(frozen=True)
class Picture:
    """An upload as the models see it, and what it takes to answer in the same kind of image.

    ``planes`` are C×H×W float32 in [0, 1]: one grey plane or three RGB planes (a model denoises each as
    a grayscale image), laid over black where the upload is transparent, as a digit on a transparent
    canvas needs; ``alpha`` (H×W in [0, 1]) is handed back untouched; ``sixteen_bit`` answers a 16-bit
    upload (grey or colour, with or without alpha) in 16 bits; ``icc_profile`` is the upload's colour profile
    where it still describes the planes (not after a CMYK upload became RGB).
    """

    planes: np.ndarray
    alpha: np.ndarray | None = None
    sixteen_bit: bool = False
    icc_profile: bytes | None = None  # the upload's colour profile (a phone's Display P3), handed back with it
    exif: bytes | None = None  # the upload's EXIF (when, with what), its orientation done: ``metadata.answer_exif``

    @property
    def height(self) -> int:
        return int(self.planes.shape[1])

    @property
    def width(self) -> int:
        return int(self.planes.shape[2])

    def with_planes(self, planes: np.ndarray) -> Picture:
        """The same kind of picture with other planes (the noisy or the denoised ones) of the same size."""
        return replace(self, planes=planes)

    def resized(self, size: tuple[int, int]) -> Picture:
        """Every plane and the alpha resized to (height, width), for a model of a fixed size."""
        if (self.height, self.width) == size:
            return self
        alpha = None if self.alpha is None else resize(self.alpha, size)
        planes = np.stack([resize(plane, size) for plane in self.planes])
        return replace(self, planes=planes, alpha=alpha, exif=None)  # another picture than the photo EXIF tells of


def to_picture(image: Image.Image) -> Picture:
    """Any mode → ``Picture``: grey modes one plane (16-bit and float ones kept in 16 bits), colour modes
    three; palette, CMYK and the like become RGB; an alpha channel is kept aside and the colour laid over it."""
    mode = image.mode
    icc_profile = image.info.get("icc_profile")
    if mode in _SIXTEEN_BIT_MODES:
        grey = np.clip(np.asarray(image, dtype=np.float32) / 65535.0, 0.0, 1.0)[None]
        return Picture(grey, None, True, profile_for(icc_profile, 1))
    if mode == "F":
        grey = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0), 0.0, 1.0)[None]
        return Picture(grey, None, True, profile_for(icc_profile, 1))
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("1", "LA", "La", "L"):
        image = image.convert("LA" if mode in ("LA", "La") else "L")
    elif mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if mode in _ALPHA_MODES else "RGB")
    pixels = np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
    picture = _from_samples(pixels, image.mode in ("LA", "RGBA"), sixteen_bit=False)
    converted = mode not in ("RGB", "RGBA", "L", "LA", "P")  # CMYK, YCbCr, LAB...: the profile was theirs
    return picture if converted else replace(picture, icc_profile=profile_for(icc_profile, len(picture.planes)))


def _from_samples(pixels: np.ndarray, has_alpha: bool, sixteen_bit: bool) -> Picture:
    """H×W or H×W×C samples in [0, 1] → ``Picture``; the last channel, where ``has_alpha``, is the alpha."""
    if pixels.ndim == 2:
        return Picture(pixels[None], None, sixteen_bit)
    planes = np.moveaxis(pixels, -1, 0)
    if has_alpha:
        alpha = planes[-1]
        return Picture(np.ascontiguousarray(planes[:-1] * alpha), alpha, sixteen_bit)
    return Picture(np.ascontiguousarray(planes), None, sixteen_bit)


def load_picture(image: Image.Image) -> Picture:
    """Decode an image from ``open_checked`` (its first frame, turned as its EXIF says), with its colour profile
    and EXIF for the answer; ``BadImage`` if corrupt."""
    wide = wide_samples(image)
    if wide is not None:
        picture = _from_samples(wide * np.float32(1 / 65535), wide.shape[-1] in (2, 4), sixteen_bit=True)
        picture = replace(picture, icc_profile=profile_for(image.info.get("icc_profile"), len(picture.planes)))
    else:
        _load(image)
        picture = to_picture(image)
    # A PNG's eXIf orientation is not applied (``_EXIF_FORMATS``): the answer keeps it, for viewers that apply it.
    exif = answer_exif(image, turned=image.format != "PNG")
    return picture if exif is None else replace(picture, exif=exif)  # replace costs a digit's decode 5 µs


def _load(image: Image.Image) -> None:
    """Decode the pixels, turned as the EXIF says; ``BadImage`` if the file is corrupt."""
    try:
        image.load()
    except _DECODE_ERRORS as exc:
        raise BadImage(f"the {image.format} image is truncated or corrupt: {exc}") from None
    if image.format in _EXIF_FORMATS:
        try:
            ImageOps.exif_transpose(image, in_place=True)
        # The pixels are whole; the EXIF is damaged. Pillow turns them, then writes the EXIF back without its
        # orientation, and a tag of the wrong type raises there (struct.error: a fuzzed Model tag read as
        # TileLength was a 500). The picture goes on as it stands, and its answer without that EXIF
        # (``metadata.answer_exif``).
        except Exception:
            image.info.pop("exif", None)
