"""CMYK uploads (print work: a magazine's JPEG, a prepress TIFF) to sRGB, through their own colour profile.

A CMYK file's numbers are ink amounts, not colours: what colour 100 % cyan is depends on the press, and the
profile embedded in the file says (FOGRA39, coated paper: sRGB 0, 159, 227). Pillow's own conversion uses a
formula that knows no press (red = (255 - C)(255 - K)/255: 0, 255, 255, a far brighter cyan), so a tagged CMYK
photo came back in colours it never had. With a CMYK profile the picture is converted as a colour-managed
browser shows it and as Photoshop converts by default (relative colorimetric, black point compensated); without
one, by Pillow's formula, as a browser shows an untagged CMYK file.

The profile is the client's bytes, read by littlecms, a C parser the service otherwise never hands an upload
to (``service.metadata`` only copies profiles back). So the conversion runs in the decode child
(``service.decode_process``), as HEIC's decode does: a crash or hang there costs only the profile, and the
picture is converted by the formula instead.
"""

from __future__ import annotations

import functools
import io
import logging

from PIL import Image, ImageCms

from service.decode_process import DECODE_PROCESS
from service.metadata import colour_space

log = logging.getLogger(__name__)


def cmyk_profile(image: Image.Image) -> bytes | None:
    """The image's colour profile if it is a CMYK image with a CMYK profile (``metadata.colour_space``: nothing
    parsed in the server), else None."""
    profile = image.info.get("icc_profile")
    if image.mode != "CMYK" or not isinstance(profile, bytes) or colour_space(profile) != b"CMYK":
        return None
    return profile


def to_srgb(image: Image.Image, profile: bytes) -> Image.Image:
    """A decoded CMYK image with its CMYK ``profile`` → an RGB image in sRGB (its EXIF kept, its profile not: the
    pixels are sRGB now, what an untagged image is taken to be). Blocks for the child's trip: call it from a worker
    thread. Where the profile cannot be used (littlecms refuses it, or the child dies or hangs on it), Pillow's
    formula converts it, with a warning in the log."""
    try:
        rgb = DECODE_PROCESS.call(
            _convert_here, image.tobytes(), image.size, profile, pixels=image.width * image.height, counted_as="icc"
        )
        converted = Image.frombytes("RGB", image.size, rgb)
    # Whatever littlecms raises on a profile (PyCMSError, OSError, MemoryError under the child's cap...) or the child
    # does: the pixels are whole, and only the profile is lost.
    except Exception as exc:
        log.warning("a CMYK upload's colour profile could not be used (%s: %s); converted without it",
                    type(exc).__name__, exc)  # fmt: skip
        converted = image.convert("RGB")
    if "exif" in image.info:
        converted.info["exif"] = image.info["exif"]
    return converted


def _convert_here(cmyk: bytes, size: tuple[int, int], profile: bytes) -> bytes:
    """In the child: CMYK samples → sRGB samples through ``profile``."""
    return _transform_from(profile).apply(Image.frombytes("CMYK", size, cmyk)).tobytes()


# Building a transform reads the profile and precomputes its tables: 31 ms for a press profile, where applying it
# to a 512×512 picture takes 3. Print work comes from a few presses, so the child keeps the last few it built.
@functools.lru_cache(maxsize=4)
def _transform_from(profile: bytes) -> ImageCms.ImageCmsTransform:
    return ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(profile)),
        ImageCms.createProfile("sRGB"),
        "CMYK",
        "RGB",
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
        flags=ImageCms.Flags.BLACKPOINTCOMPENSATION,
    )
