"""Colour photos through the service: RGB PSNR of the photo model's answer, with colour BM3D beside it.

There is no colour set in the denoising data (``natural/`` is grayscale), so the photos are colour
photographs that ship with the study's libraries. ``--photos report`` (the default, the figures in
docs/benchmarks.md): scikit-image's astronaut, chelsea and coffee. ``--photos choice``: the ones the colour
path (``service.colour``) was chosen on, never the report's: scikit-image's motorcycle and ihc, a 512×512
crop of its retina, matplotlib's Grace Hopper and the test fixture's coffee crop. Each gets Gaussian noise
of σ 15, 25 and 50 /255 on every channel (seeded), and the panel's salt-and-pepper 0.2 and masking 0.3 plus
a sparse salt-and-pepper 0.02 (drawn per channel, as the service draws them), and is then **saved as an
8-bit PNG**, as a user's noisy photo would be (clipped, quantised). That PNG is posted to ``/denoise`` of
the real app (in process, no socket) with the photo model, as a colour image (what the service serves) and
as its three channels posted one by one as grey images (what denoising the planes alone gives, the
service's colour path before ``service.colour``). Colour BM3D (``bm3d.bm3d_rgb``, σ given, which works in
an opponent colour space and shares its block matching across channels) denoises the very same 8-bit
image. PSNR is over the three
channels of the 8-bit result against the clean photo.

    python -m bench.colour_photos              # prints the table, writes "Photos: colour" in docs/benchmarks.md
    python -m bench.colour_photos --photos choice --sigmas 0 2 5 15 25 50 --no-bm3d   # a section of its own
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.common import device_description, publish
from models.corruptions import NOISES
from service.app import create_app
from service.noise import NoiseSpec
from service.settings import Settings

HEADINGS = {"report": "Photos: colour", "choice": "Photos: colour, the photos the colour path was chosen on"}
MODEL = "photo-blind"
SEED = 0
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "colour" / "coffee.png"


def colour_photos(which: str) -> dict[str, np.ndarray]:
    """name → H×W×3 uint8, from files the libraries ship (no download)."""
    import matplotlib
    import skimage
    from skimage import data

    if which == "report":
        return {name: getattr(data, name)()[..., :3] for name in ("astronaut", "chelsea", "coffee")}
    skimage_data = Path(skimage.__file__).parent / "data"
    files = {
        "motorcycle": skimage_data / "motorcycle_left.png",
        "ihc": skimage_data / "ihc.png",
        "retina (crop)": skimage_data / "retina.jpg",
        "grace hopper": Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg",
        "coffee (fixture crop)": FIXTURE,
    }
    photos = {name: np.asarray(Image.open(path).convert("RGB")) for name, path in files.items()}
    photos["retina (crop)"] = photos["retina (crop)"][450:962, 450:962]  # the eye's middle, not the black frame
    return photos


IMPULSES = (("salt_pepper", 0.02), ("salt_pepper", 0.2), ("masking", 0.3))


def add_noise_8bit(clean: np.ndarray, sigma: int, seed: int) -> np.ndarray:
    """AWGN of σ/255 on each channel, then clipped and rounded to 8 bits: the photo a user would hold."""
    noise = np.random.default_rng(seed).normal(0.0, sigma, clean.shape)
    return np.clip(np.rint(clean.astype(np.float64) + noise), 0, 255).astype(np.uint8)


def add_impulses(clean: np.ndarray, kind: str, level: float, seed: int) -> np.ndarray:
    """H×W×3 uint8 with ``kind`` noise at ``level`` drawn as the service draws it on an upload (each pixel of
    each channel on its own, ``service.noise.NoiseSpec``); its values stay 8-bit (0, 1 or the pixel's own)."""
    planes = np.moveaxis(clean, -1, 0).astype(np.float32) / 255.0
    noisy = NoiseSpec(kind, level, seed).apply(planes)
    return np.rint(np.moveaxis(noisy, 0, -1) * 255.0).astype(np.uint8)


def psnr_8bit(output: np.ndarray, clean: np.ndarray) -> float:
    mse = np.mean((output.astype(np.float64) - clean.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse)) if mse > 0 else float("inf")


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def colour_bm3d(noisy: np.ndarray, sigma: int) -> np.ndarray:
    import bm3d

    out = bm3d.bm3d_rgb(noisy.astype(np.float64) / 255.0, sigma / 255.0)
    return np.clip(np.rint(np.asarray(out) * 255.0), 0, 255).astype(np.uint8)


@contextlib.asynccontextmanager
async def served_photo_model() -> AsyncIterator[Callable[[bytes], Awaitable[np.ndarray]]]:
    """The real app in process (no socket), ready; yields ``post``: a PNG's bytes → the photo model's answer
    from ``/denoise``, as pixels."""
    app = create_app(Settings())
    async with app.router.lifespan_context(app):
        while not app.state.store.ready:
            await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client:

            async def post(body: bytes) -> np.ndarray:
                response = await client.post(
                    "/denoise",
                    files={"file": ("photo.png", body, "image/png")},
                    data={"model": MODEL},
                    headers={"Accept": "image/png"},
                )
                response.raise_for_status()
                return np.asarray(Image.open(io.BytesIO(response.content)))

            yield post


async def denoise_all(noisy: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    """Post each noisy photo to /denoise of the real app, whole and channel by channel; (colour outputs,
    outputs of the channels alone, seconds per colour request)."""
    as_colour, as_planes, seconds = [], [], []
    async with served_photo_model() as post:
        for pixels in noisy:
            body = png_bytes(pixels)
            started = time.perf_counter()
            as_colour.append(await post(body))
            seconds.append(time.perf_counter() - started)
            channels = [await post(png_bytes(np.ascontiguousarray(pixels[..., c]))) for c in range(3)]
            as_planes.append(np.stack(channels, -1))
    return as_colour, as_planes, seconds


# photo, (noise, level), noisy, planes alone, as served, colour BM3D (nan: none)
Row = tuple[str, tuple[str, float], float, float, float, float]


def label(noise: tuple[str, float]) -> str:
    return f"σ {int(noise[1])}" if noise[0] == "gaussian" else f"{NOISES[noise[0]].label} {noise[1]:g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", choices=("report", "choice"), default="report")
    parser.add_argument("--sigmas", type=int, nargs="+", default=[15, 25, 50])
    parser.add_argument("--no-bm3d", action="store_true", help="leave colour BM3D out (about 20 s a photo here)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    photos = colour_photos(args.photos)
    noises: list[tuple[str, float]] = [("gaussian", sigma) for sigma in args.sigmas] + list(IMPULSES)
    cases = [(name, noise) for noise in noises for name in photos]
    noisy = [
        add_noise_8bit(photos[name], int(level), SEED + i) if kind == "gaussian"
        else add_impulses(photos[name], kind, level, SEED + i)
        for i, (name, (kind, level)) in enumerate(cases)
    ]  # fmt: skip
    as_colour, as_planes, model_s = asyncio.run(denoise_all(noisy))
    rows: list[Row] = []
    bm3d_s: list[float] = []
    for (name, noise), noisy_image, colour, planes in zip(cases, noisy, as_colour, as_planes, strict=True):
        clean = photos[name]
        reference = float("nan")
        if not args.no_bm3d and noise[0] == "gaussian" and noise[1] > 0:
            started = time.perf_counter()
            reference = psnr_8bit(colour_bm3d(noisy_image, int(noise[1])), clean)
            bm3d_s.append(time.perf_counter() - started)
        scores = [psnr_8bit(image, clean) for image in (noisy_image, planes, colour)]
        rows.append((name, noise, scores[0], scores[1], scores[2], reference))
        print(
            f"{name} {label(noise)}: noisy {scores[0]:.2f}, planes alone {scores[1]:.2f}, {MODEL} {scores[2]:.2f}, "
            f"colour BM3D {reference:.2f} dB"
        )
    text = report(rows, photos, model_s, bm3d_s, args)
    publish(HEADINGS[args.photos], text, write=not args.no_write)
    return 0


def command(args: argparse.Namespace) -> str:
    """The command line that reproduces the figures."""
    parts = ["python -m bench.colour_photos"]
    if args.photos != "report":
        parts += ["--photos", args.photos]
    if args.sigmas != [15, 25, 50]:
        parts += ["--sigmas", *map(str, args.sigmas)]
    if args.no_bm3d:
        parts.append("--no-bm3d")
    return " ".join(parts)


def report(
    rows: list[Row], photos: dict[str, np.ndarray], model_s: list[float], bm3d_s: list[float], args: argparse.Namespace
) -> str:
    sizes = ", ".join(f"{name} {p.shape[1]}×{p.shape[0]}" for name, p in photos.items())
    lines = [
        f"Measured {datetime.date.today()} on {device_description('cpu')} with `{command(args)}`. "
        f"Photos: {sizes}; Gaussian noise on every channel, saved as 8-bit PNG (clipped, as a user's photo is) "
        f"and posted to `/denoise` with `{MODEL}`: as a colour image (what the service answers: the R, G, B "
        "planes and the opponent colour planes denoised and merged, `service/colour.py`) and channel by channel "
        "as grey images (the planes alone, how the service answered colour before); colour BM3D "
        "(`bm3d.bm3d_rgb`, σ given) on the same 8-bit image. Salt-and-pepper and masking drawn as the service "
        "draws them (`service.noise.NoiseSpec`, each channel on its own), where the service keeps to the planes "
        "alone (`service.colour.has_impulses`). Mean RGB PSNR (dB); "
        "worst photo's gain of the colour answer over the planes alone in brackets:",
        "",
        f"| noise (σ in /255) | noisy input | {MODEL}, planes alone | {MODEL}, as served | colour BM3D |",
        "| --- | --- | --- | --- | --- |",
    ]
    for noise in dict.fromkeys(r[1] for r in rows):
        chosen = [r for r in rows if r[1] == noise]
        noisy, alone, served, reference = (float(np.mean([r[k] for r in chosen])) for k in (2, 3, 4, 5))
        worst = min(r[4] - r[3] for r in chosen)
        lines.append(
            f"| {label(noise)} | {noisy:.2f} | {alone:.2f} | {served:.2f} ({worst:+.2f}) | "
            f"{'-' if np.isnan(reference) else f'{reference:.2f}'} |"
        )
    gaussian = [seconds for row, seconds in zip(rows, model_s, strict=True) if row[1][0] == "gaussian"]
    impulses = [seconds for row, seconds in zip(rows, model_s, strict=True) if row[1][0] != "gaussian"]
    timing = (
        f"Per photo, median, in process, this CPU: `/denoise` {np.median(gaussian):.2f} s with Gaussian noise "
        f"(both colour spaces), {np.median(impulses):.2f} s with impulse noise (R, G, B alone)"
    )
    if bm3d_s:
        timing += f", colour BM3D {np.median(bm3d_s):.1f} s"
    lines += ["", timing + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
