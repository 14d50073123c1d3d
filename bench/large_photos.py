"""Large photos through the service: seconds per request and PSNR, for photos past the tile size, grey and colour.

A phone or camera photo is larger than one tile (``DAE_TILE_SIZE``, 512): the service cuts it into
overlapping tiles, runs them through the batcher and stitches them back (``service.tiles``). This measures
what that costs a user, one request at a time, on photographs that ship with scikit-image (no download):
the Hubble deep field (1000×872) and the retina (1411×1411), each in colour and as grey (its luma), with
Gaussian noise of σ 25/255 saved as an 8-bit PNG, posted to ``/denoise`` of the real app (in process, no
socket) with the photo model. PSNR of the answer against the clean photo beside the noisy input's.

    python -m bench.large_photos              # prints the table, writes "Photos: large" in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import time

import numpy as np
from PIL import Image

from bench.colour_photos import MODEL, add_noise_8bit, png_bytes, psnr_8bit, served_photo_model
from bench.common import device_description, publish

HEADING = "Photos: large"
SIGMA = 25
REPEATS = 2  # the fastest of two posts of each photo: the VM's speed varies


def large_photos() -> dict[str, np.ndarray]:
    """name → H×W×3 (colour) or H×W (grey) uint8."""
    from skimage import data

    photos: dict[str, np.ndarray] = {}
    for name in ("hubble_deep_field", "retina"):
        colour = getattr(data, name)()[..., :3]
        photos[f"{name} (colour)"] = colour
        photos[f"{name} (grey)"] = np.asarray(Image.fromarray(colour).convert("L"))
    return photos


async def time_posts(noisy: list[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
    """Each photo posted ``REPEATS`` times, alone; (the answers, the fastest seconds of each)."""
    answers, seconds = [], []
    async with served_photo_model() as post:
        for pixels in noisy:
            body, times = png_bytes(pixels), []
            for _ in range(REPEATS):
                started = time.perf_counter()
                answer = await post(body)
                times.append(time.perf_counter() - started)
            answers.append(answer)
            seconds.append(min(times))
    return answers, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    photos = large_photos()
    noisy = [add_noise_8bit(clean, SIGMA, seed) for seed, clean in enumerate(photos.values())]
    answers, seconds = asyncio.run(time_posts(noisy))
    lines = [
        f"Measured {datetime.date.today()} on {device_description('cpu')} with `python -m bench.large_photos`. "
        f"Gaussian noise of σ {SIGMA}/255 on every channel, saved as 8-bit PNG, posted alone to `/denoise` with "
        f"`{MODEL}` (tiles of at most 512, overlap 32: the defaults); the fastest of {REPEATS} posts.",
        "",
        "| photo | size | noisy PSNR (dB) | denoised PSNR (dB) | seconds per request |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for (name, clean), noisy_image, answer, took in zip(photos.items(), noisy, answers, seconds, strict=True):
        size = f"{clean.shape[1]}×{clean.shape[0]}"
        lines.append(
            f"| {name} | {size} | {psnr_8bit(noisy_image, clean):.2f} | {psnr_8bit(answer, clean):.2f} | {took:.2f} |"
        )
    text = "\n".join(lines)
    publish(HEADING, text, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
