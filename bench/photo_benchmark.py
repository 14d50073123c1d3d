"""Photos through the service: one 481×321 photo at a time against BM3D, and a 256×256 photo under load.

- **latency**: ``wrk`` at one connection posting a BSD68-sized photo (481×321) to ``/denoise`` with the
  photo model, against BM3D (the ``bm3d`` package, σ given) on the same image in this process;
- **load**: ``wrk`` at 1 and 32 connections posting a 256×256 photo, batching on (as shipped) and off
  (``DAE_MAX_BATCH_SIZE=1``); the mean batch is read from ``/metrics``.

Every server runs as in ``bench.serve_benchmark`` (its ``measure``: servers up at once, rounds
interleaved, the fastest round kept). The figures go to the "Photos: serving" section of
docs/benchmarks.md, beside the evaluation tables ``dae-eval`` writes in the model card.

    python -m bench.photo_benchmark --data-root ../shared/data
    python -m bench.photo_benchmark --data-root ../shared/data --duration 3 --repeats 1 --no-write
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import device_description, publish
from bench.loopback import Variant, wrk_version
from bench.serve_benchmark import Point, format_row, measure

MODEL = "photo-blind"
HEADING = "Photos: serving"


def bm3d_seconds(path: Path, sigma: float, repeats: int) -> float:
    """BM3D's fastest time on the image at noise σ (8-bit units), σ given: the classical floor to beat."""
    import bm3d

    clean = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
    noisy = clean + np.random.default_rng(0).normal(0.0, sigma / 255.0, clean.shape)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        bm3d.bm3d(noisy, sigma_psd=sigma / 255.0)
        times.append(time.perf_counter() - started)
    return min(times)


def square_crop(path: Path, side: int, out: Path) -> Path:
    Image.open(path).convert("L").crop((0, 0, side, side)).save(out)
    return out


def report(points: list[tuple[str, Point]], bm3d_s: float, photo: Path, args: argparse.Namespace) -> str:
    """The section for docs/benchmarks.md; ``points`` are (which photo, measured point)."""
    latency = next(p for label, p in points if label == "481×321" and p.variant.batch_size is None)
    speedup = bm3d_s * 1000.0 / latency.p50_ms
    return f"""`wrk` (one thread, `bench/serve_post.lua`) posting a photo to `/denoise` (model `{MODEL}`,
`Accept: image/png`) on the same machine as the server; `service` is `dae-serve` as shipped, `service,
batch 1` the same with `DAE_MAX_BATCH_SIZE=1` (on a CPU the two are the same for photos: a forward there
holds at most 65,536 pixels, one 256×256 photo, because larger batches cost more per image; see
`service/placement.py`). A point is the fastest of {args.repeats} rounds of
{args.duration} s. BM3D: the `bm3d` package on the same 481×321 photo at σ 25, σ given, in one process,
fastest of {args.bm3d_repeats}.

- Command: `python -m bench.photo_benchmark --data-root DATA`
- Device: {device_description("auto")}, {os.cpu_count()} cores; {wrk_version()}
- Measured: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC

| photo | server | model | connections | requests/s | p50 ms | p99 ms | mean batch | ms per batch | errors |
| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(f"| {label} {format_row(p)}" for label, p in points)}

- One 481×321 photo ({photo.name}) at one connection: **{latency.p50_ms:.0f} ms** (p50; p99
  {latency.p99_ms:.0f} ms); BM3D on it: {bm3d_s * 1000:.0f} ms, **{speedup:.0f}×** slower.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("data"), help="holds natural/bsd68 and natural/set12")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds, the fastest kept (default 3)")
    parser.add_argument("--bm3d-repeats", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    natural = args.data_root / "natural"
    photo = natural / "bsd68" / "test001.png"
    with tempfile.TemporaryDirectory(prefix="photo-bench-") as scratch:
        square = square_crop(natural / "set12" / "08.png", 256, Path(scratch) / "photo-256.png")
        variants = [Variant("service", MODEL), Variant("service", MODEL, 1)]
        points: list[tuple[str, Point]] = []
        for image, connections, label in ((photo, (1,), "481×321"), (square, (1, 32), "256×256")):
            measured = measure(variants, connections, args.duration, args.repeats, image, Path(scratch))
            points += [(label, point) for point in measured]
    bm3d_s = bm3d_seconds(photo, 25, args.bm3d_repeats)
    text = report(points, bm3d_s, photo, args)
    publish(HEADING, text, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
