"""What a photo's decode and encode cost, by format: the uploads people send and the answers they may ask for.

Scikit-image's astronaut (512×512 colour) as an 8-bit PNG, a 16-bit PNG (read with pypng, its inflating
bounded first: Pillow has no 16-bit colour mode) and a JPEG; the test fixture's HEIC phone photo (64×48: only
pillow-heif can write one, and the service reads HEIC with pi-heif in a child process); and the denoised
answer encoded as each type a client may ask for with ``Accept``, with its size; and the same photo as print work
sends it, a CMYK JPEG with and without its press's colour profile.

    python -m bench.upload_costs              # prints the table, writes "Uploads: decode and encode"
    python -m bench.upload_costs --no-write

Each figure is the median over ``--repeats`` rounds of the mean time per call in a timed loop.
"""

from __future__ import annotations

import datetime
import io
from functools import partial
from pathlib import Path

import numpy as np
import png
from PIL import Image

from bench.common import device_description, publish
from bench.costs import cost_arguments, per_call_us
from service.encoding import ANSWER_TYPES, encode_answer
from service.images import ACCEPTED_FORMATS, load_picture, open_checked

HEADING = "Uploads: decode and encode"
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
HEIC = FIXTURES / "phone" / "coffee-turned.heic"
PRINT_PROFILE = FIXTURES / "print" / "fogra39-low.icc"  # a press's CMYK profile (FOGRA39, coated paper)
LIMIT = 1 << 22


def saved(pixels: np.ndarray | Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    (pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)).save(buffer, format=format, **options)
    return buffer.getvalue()


def decode(upload: bytes) -> None:
    load_picture(open_checked(upload, LIMIT))


def measure(repeats: int) -> list[tuple[str, float, str]]:
    """(what, µs per call, size) rows."""
    from skimage import data

    photo = data.astronaut()
    wide = io.BytesIO()
    png.Writer(512, 512, greyscale=False, bitdepth=16).write(wide, (photo.astype(np.uint16) * 257).reshape(512, -1))
    uploads = {
        "PNG": saved(photo, "PNG"),
        "16-bit PNG": wide.getvalue(),
        "JPEG (q95)": saved(photo, "JPEG", quality=95),
    }
    rows = []
    for kind, upload in uploads.items():
        rows.append((f"decode a 512×512 colour {kind}", per_call_us(partial(decode, upload), 20, repeats), kb(upload)))
    if "HEIC" in ACCEPTED_FORMATS:
        heic = HEIC.read_bytes()
        decode(heic)  # the child process starts once
        took = per_call_us(partial(decode, heic), 200, repeats)
        rows.append(("decode a 64×48 HEIC, through the child process", took, kb(heic)))
    # Print work: CMYK with its press's profile, converted through it in the child process (service.cmyk); without
    # one, by Pillow's formula in the server
    cmyk = Image.fromarray(photo).convert("CMYK")
    for kind, upload in (
        (
            "with its profile, through the child process",
            saved(cmyk, "JPEG", quality=95, icc_profile=PRINT_PROFILE.read_bytes()),
        ),
        ("without a profile", saved(cmyk, "JPEG", quality=95)),
    ):
        decode(upload)  # the child process starts once
        rows.append(
            (f"decode a 512×512 CMYK JPEG (q95) {kind}", per_call_us(partial(decode, upload), 20, repeats), kb(upload))
        )
    picture = load_picture(open_checked(uploads["PNG"], LIMIT))
    for media_type in ANSWER_TYPES:
        encode = partial(encode_answer, picture.planes, picture, media_type)
        rows.append((f"encode a 512×512 colour answer as {media_type}", per_call_us(encode, 10, repeats), kb(encode())))
    return rows


def kb(data: bytes) -> str:
    return f"{len(data) / 1024:,.0f} KB"


def main(argv: list[str] | None = None) -> int:
    args = cost_arguments(__doc__.splitlines()[0], argv)
    rows = measure(args.repeats)
    lines = [
        f"Measured {datetime.date.today()} on {device_description('cpu')} with `python -m bench.upload_costs`: "
        f"each the median of {args.repeats} rounds of a timed loop, nothing else running.",
        "",
        "| what | ms | size |",
        "| --- | ---: | ---: |",
        *(f"| {what} | {us / 1000:,.2f} | {size} |" for what, us, size in rows),
    ]
    publish(HEADING, "\n".join(lines), write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
