"""16-bit colour uploads, read in full: Pillow has no 16-bit colour mode and narrows such images to 8 bits.

A 16-bit RGB, RGBA or grey-and-alpha PNG is read with pypng, a TIFF of those with tifffile (none, Deflate and
PackBits compression; LZW where imagecodecs is installed). Anything else, or a file these will not read, is
left to Pillow (``None``): an answer at 8 bits, or Pillow's own "truncated or corrupt".
"""

from __future__ import annotations

import io
import logging

import numpy as np
import png
import tifffile
from PIL import ExifTags, Image, ImageFile, ImageOps, TiffImagePlugin

# Pillow's raw modes for the PNGs whose samples it narrows to 8 bits (its modes hold 16 bits only for one grey
# plane): RGB, RGBA and grey-and-alpha of 16 bits a sample, which ``wide_samples`` reads in full instead.
_WIDE_PNG_RAWMODES = frozenset({"RGB;16B", "RGBA;16B", "LA;16B"})
_TIFF_BITS_PER_SAMPLE, _TIFF_PHOTOMETRIC = 258, 262
_TIFF_GREY_OR_RGB = frozenset({1, 2})  # photometric interpretation: min-is-black, RGB
# tifffile logs a warning or an error for every flaw it meets in a file; in a server those files are uploads,
# and their flaws are the client's (the answer says so), not lines for the operator's log.
logging.getLogger("tifffile").setLevel(logging.CRITICAL)


def wide_samples(image: Image.Image) -> np.ndarray | None:
    """The H×W×C uint16 samples of a 16-bit colour (or grey-and-alpha) PNG or TIFF, which Pillow would narrow
    to 8 bits; None for any other image, and where the other decoder cannot read it (a TIFF compressed with
    LZW needs imagecodecs, which tifffile does without here): Pillow reads it then, at 8 bits.

    Called before Pillow decodes: the header is parsed and ``image.fp`` still holds the upload.
    """
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
            width, height, rows, _ = png.Reader(bytes=data).read()
            samples = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, -1)
        else:
            with tifffile.TiffFile(io.BytesIO(data)) as tiff:
                page = tiff.pages.first
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
