"""What an answer carries of its upload besides the pixels: the colour profile and the EXIF.

A phone photo's pixels are Display P3: without the upload's ICC profile a viewer takes the answer for sRGB and
shows it washed out. Its EXIF holds when and with what it was taken (and where): without it, a denoised photo
goes into a photo library at the date it was downloaded. Both are the client's own bytes, handed back; the
service reads no more of them than it must.
"""

from __future__ import annotations

from PIL import ExifTags, Image

_ORIENTATION = ExifTags.Base.Orientation
_EXIF_PREFIX = b"Exif\x00\x00"  # JPEG's APP1 marker text; Pillow's info["exif"] and Exif.tobytes() carry it


def colour_space(icc_profile: bytes) -> bytes | None:
    """A profile's colour space (``b"RGB "``, ``b"GRAY"``, ``b"CMYK"``...), read from its header's field (bytes
    16..20, ICC.1:2022 section 7.2.6) rather than by parsing the client's profile with littlecms; None for bytes
    too short to be a profile."""
    return icc_profile[16:20] if len(icc_profile) >= 128 else None


def profile_for(icc_profile: bytes | None, channels: int) -> bytes | None:
    """The profile, if it is one for pictures of ``channels`` (1: grey, 3: RGB); else None (``colour_space``:
    the service only hands the bytes back)."""
    if icc_profile is None:
        return None
    return icc_profile if colour_space(icc_profile) == (b"GRAY" if channels == 1 else b"RGB ") else None


def answer_exif(image: Image.Image, turned: bool = True) -> bytes | None:
    """The upload's EXIF block for the answer (``Exif\\0\\0`` and the TIFF structure, as JPEG carries it), without
    its orientation when the pixels were ``turned`` as it said (a viewer would turn them again); None when there
    is none, or none that reads. Only a block of its own (JPEG, PNG's eXIf, WebP, HEIC, AVIF: ``info["exif"]``),
    not a TIFF's own tags, which describe its strips and compression rather than the photo. The thumbnail (IFD1)
    is left behind: it shows the upload, noise and all."""
    raw = image.info.get("exif")
    if not isinstance(raw, bytes) or not raw:
        return None
    exif = Image.Exif()
    try:
        exif.load(raw)
        for ifd in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo, ExifTags.IFD.Interop):
            if ifd in exif:
                exif.get_ifd(ifd)  # loaded, so that tobytes writes it back
        if turned:
            exif.pop(_ORIENTATION, None)
        return exif.tobytes() if len(exif) else None
    # A client's EXIF may be anything: Pillow meets a damaged one with any of these, and the answer goes without
    except Exception:
        return None


def png_exif(exif: bytes) -> bytes:
    """An EXIF block as PNG's eXIf chunk holds it: the TIFF structure, without JPEG's ``Exif\\0\\0``."""
    return exif.removeprefix(_EXIF_PREFIX)
