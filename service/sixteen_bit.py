"""16-bit colour uploads, read in full: Pillow has no 16-bit colour mode and narrows such images to 8 bits.

A 16-bit RGB, RGBA or grey-and-alpha PNG is read with pypng, a TIFF of those with tifffile (uncompressed or
Deflate: what bounds their inflating is checked here first, see ``_inflates_to_its_size``). Anything else (a
TIFF compressed with LZW or PackBits, a stream that inflates past its image), or a file these will not read, is
left to Pillow (``None``): an answer at 8 bits, or Pillow's own "truncated or corrupt". A 10- or 12-bit HEIC
(a camera's) arrives from the decoder's child process already read, its samples in ``image.info`` under
``DECODED_SAMPLES`` (``service.images``).
"""

from __future__ import annotations

import io
import logging
import zlib

import numpy as np
import png
import tifffile
from PIL import ExifTags, Image, ImageFile, ImageOps, TiffImagePlugin

# Pillow's raw modes for the PNGs whose samples it narrows to 8 bits (its modes hold 16 bits only for one grey
# plane): RGB, RGBA and grey-and-alpha of 16 bits a sample, which ``wide_samples`` reads in full instead.
_WIDE_PNG_RAWMODES = {"RGB;16B": 3, "RGBA;16B": 4, "LA;16B": 2}  # and their channels
_TIFF_BITS_PER_SAMPLE, _TIFF_PHOTOMETRIC = 258, 262
_TIFF_GREY_OR_RGB = frozenset({1, 2})  # photometric interpretation: min-is-black, RGB
# tifffile logs a warning or an error for every flaw it meets in a file; in a server those files are uploads,
# and their flaws are the client's (the answer says so), not lines for the operator's log.
logging.getLogger("tifffile").setLevel(logging.CRITICAL)


# Where a decoder child leaves the samples it read at more than 8 bits (uint16, H×W×C), beside the 8-bit picture.
DECODED_SAMPLES = "dae.decoded_samples"


def wide_samples(image: Image.Image) -> np.ndarray | None:
    """The H×W×C uint16 samples of a 16-bit colour (or grey-and-alpha) PNG or TIFF, which Pillow would narrow
    to 8 bits, or of a HEIC of more than 8 bits; None for any other image, and where these cannot read it safely
    (see the module's docstring): Pillow reads it then, at 8 bits.

    Called before Pillow decodes: the header is parsed and ``image.fp`` still holds the upload.
    """
    decoded = image.info.get(DECODED_SAMPLES)
    if isinstance(decoded, np.ndarray):  # a PNG's text chunk of that name would be a str
        return decoded
    if not isinstance(image, ImageFile.ImageFile) or image.fp is None:
        return None
    if isinstance(image, TiffImagePlugin.TiffImageFile):
        bits = image.tag_v2.get(_TIFF_BITS_PER_SAMPLE, ())
        if image.mode not in ("RGB", "RGBA", "LA") or set(bits) != {16}:
            return None
        if image.tag_v2.get(_TIFF_PHOTOMETRIC) not in _TIFF_GREY_OR_RGB:
            return None
    elif image.format != "PNG" or not image.tile or image.tile[0][3] not in _WIDE_PNG_RAWMODES:
        return None
    image.fp.seek(0)
    data = image.fp.read()
    # Either decoder raises its own assortment of errors on a file it will not read; Pillow, which opened this
    # one, then has the last word (an answer at 8 bits, or its "truncated or corrupt").
    try:
        if image.format == "PNG":
            channels = _WIDE_PNG_RAWMODES[str(image.tile[0][3])]  # its raw mode's: LA;16B opens as RGBA
            if not _inflates_to_its_size(data, image.width, image.height, channels, image.info.get("interlace")):
                return None
            width, height, rows, _ = png.Reader(bytes=data).read()
            samples = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, -1)
        else:
            with tifffile.TiffFile(io.BytesIO(data)) as tiff:
                page = tiff.pages.first
                if not isinstance(page, tifffile.TiffPage) or not _segments_inflate_to_their_size(data, page):
                    return None
                samples = page.asarray(maxworkers=1)
                if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE:
                    samples = np.moveaxis(samples, 0, -1)
    except Exception:  # see above
        return None
    if samples.dtype != np.uint16 or samples.ndim != 3:
        return None
    # Pillow shows a TIFF turned as its orientation tag says (its size is the turned one); so must we.
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1) if image.format == "TIFF" else 1
    samples = samples if orientation == 1 else turned(samples, orientation)
    return samples if samples.shape[:2] == (image.height, image.width) else None


# Adam7's passes: (first column, first row, column step, row step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _inflates_to_its_size(data: bytes, width: int, height: int, channels: int, interlaced: object) -> bool:
    """Whether the PNG's image data inflates to no more than its rows of 16-bit samples need. pypng inflates
    the whole stream, however long: a 1 MB file whose stream inflates to 1 GB held it 39 s and took 3.8 GB here.
    (Pillow stops at the image's size: such a file goes to it.) Inflated here once, in bounded steps."""
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    needed = 0
    for x0, y0, dx, dy in passes:
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and rows > 0:
            needed += rows * (1 + columns * channels * 2)  # a filter byte, then the samples, per row
    inflater = zlib.decompressobj()
    produced = 0
    for chunk_type, body in png.Reader(bytes=data).chunks():
        if chunk_type == b"IDAT":
            produced += len(inflater.decompress(body, needed + 1 - produced))
            if produced > needed:
                return False
    return True


def _segments_inflate_to_their_size(data: bytes, page: tifffile.TiffPage) -> bool:
    """Whether each strip or tile of a 16-bit TIFF inflates to no more than its samples: tifffile inflates a
    Deflate segment whole, and a 1 MB file whose strip inflates to 1 GB took 2 GB here. Uncompressed and Deflate
    only; any other compression (PackBits, LZW...) goes to Pillow, which stops at the image's size."""
    if page.compression == tifffile.COMPRESSION.NONE:
        return True
    if page.compression not in (tifffile.COMPRESSION.ADOBE_DEFLATE, tifffile.COMPRESSION.DEFLATE):
        return False
    samples = 1 if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE else page.samplesperpixel
    if page.is_tiled:
        pixels = page.tilewidth * page.tilelength * max(1, page.tiledepth)
    else:
        pixels = min(page.rowsperstrip or page.imagelength, page.imagelength) * page.imagewidth
    size = pixels * samples * 2
    for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
        if len(zlib.decompressobj().decompress(data[offset : offset + count], size + 1)) > size:
            return False
    return True


def turned(samples: np.ndarray, orientation: int) -> np.ndarray:
    """H×W×C samples turned as an EXIF ``orientation`` says, plane by plane, by Pillow's own table."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    planes = []
    for channel in np.moveaxis(samples, -1, 0):
        plane = Image.fromarray(np.ascontiguousarray(channel))
        plane.info["exif"] = exif.tobytes()
        planes.append(np.asarray(ImageOps.exif_transpose(plane)))
    return np.stack(planes, axis=-1)
