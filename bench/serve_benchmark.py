"""Serving throughput and latency under loopback load, driven by ``wrk`` (not a Python client).

Each server variant runs as its own process on 127.0.0.1; ``wrk`` (one thread, ``bench/serve_post.lua``)
posts a 28×28 PNG digit (or ``--image``) to ``/denoise`` with ``Accept: image/png`` for a bounded time at each number of
connections, and the figures are requests/s, p50 and p99 latency, and (for the service) the mean
number of images per forward pass read from ``/metrics``. The variants, per model:

- ``service``: ``dae-serve`` as shipped (dynamic batching, ``DAE_MAX_BATCH_SIZE`` 32);
- ``service, batch 1``: the same with ``DAE_MAX_BATCH_SIZE=1`` (batching off);
- ``service, threads``: the same with ``DAE_INFERENCE_BACKEND=thread`` (the forwards in threads of the server),
  or ``service, child process`` with ``DAE_INFERENCE_BACKEND=process`` for a model shipped in threads;
- ``naive``: ``bench/serve_naive.py``, the model run per request inside the endpoint;

and once, ``floor``: ``bench/serve_floor.py``, decode and encode with no model (what HTTP allows here).
Starting the servers and driving ``wrk`` is ``bench.loopback``'s; this module measures, compares and writes.

    python -m bench.serve_benchmark                     # the full run, written to docs/benchmarks.md
    python -m bench.serve_benchmark --duration 2 --models mlp-gaussian --no-write    # a quick look
    python -m bench.serve_benchmark --models photo-blind --image service/static/samples/photo-cameraman.png \
        --connections 1 8 --duration 10 --section "Serving: photos"                  # 256×256 photos
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from bench.common import device_description, write_section
from bench.loopback import (
    DEFAULT_IMAGE,
    REPO,
    Variant,
    batch_totals,
    parse_wrk,
    run_wrk,
    running,
    wrk_version,
)

CONNECTIONS = (1, 8, 32, 64)
MODELS = ("mlp-gaussian", "conv-blind")


@dataclass(frozen=True)
class Point:
    variant: Variant
    connections: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    mean_batch: float | None
    errors: int
    rounds: tuple[float, ...] = ()  # requests/s of every round's run, in round order (the point is the fastest)
    batch_ms: float | None = None  # the mean wall time of one batch in the inference thread (on CUDA: the GPU's)


def measure(
    variants: list[Variant],
    connections: tuple[int, ...],
    duration_s: float,
    repeats: int,
    image: Path,
    log_dir: Path,
    wrk_threads: int = 1,
) -> list[Point]:
    """Every variant's server up at once, then ``repeats`` rounds, each measuring every variant at every
    number of connections in turn (in reverse order every other round, so that none always runs first); a
    point is the variant's fastest run at that number (timeit's rule: interference from the rest of the
    machine only ever slows a run), and keeps every round's rate for paired ratios (``paired_ratio``).
    Interleaving spreads a stretch of interference over all the variants instead of landing it on whichever
    was running then."""
    with ExitStack() as servers:
        urls = {variant: servers.enter_context(running(variant, log_dir)) for variant in variants}
        for variant, url in urls.items():
            run_wrk(url, 8, min(2.0, duration_s), image, variant.model)  # warm the caches and the allocator
        runs: dict[tuple[Variant, int], list[Point]] = {}
        for round_number in range(1, repeats + 1):
            for n in connections:
                for variant in variants if round_number % 2 else variants[::-1]:
                    run = measure_once(urls[variant], variant, n, duration_s, image, wrk_threads)
                    print(f"round {round_number}: " + format_row(run), flush=True)
                    runs.setdefault((variant, n), []).append(run)
    points = []
    for variant in variants:
        for n in connections:
            fastest = max(runs[variant, n], key=lambda run: run.requests_per_s)
            points.append(replace(fastest, rounds=tuple(run.requests_per_s for run in runs[variant, n])))
    return points


def paired_ratio(numerator: Point, denominator: Point) -> tuple[float, float, float] | None:
    """The median of the round-by-round ratios of two points measured in the same rounds, and its 95%
    bootstrap interval (percentile method, resampling rounds; seeded, so a report reproduces).

    Each round runs the variants one after the other, a few runs apart, so a ratio within a round cancels a
    slow stretch of the machine that a ratio of the two fastest runs (each from any round) does not: on a
    VM whose speed drifts between rounds, this is the comparison to read, and the interval says how far
    the rounds let it be trusted. Plain numpy: the study's ``training.study.stats.bootstrap`` intervals a
    difference of means over images and seeds, not a median of ratios, and scipy's would make scipy a
    dependency of the benchmarks for five lines."""
    if len(numerator.rounds) != len(denominator.rounds) or len(numerator.rounds) < 2 or 0 in denominator.rounds:
        return None
    ratios = np.array(numerator.rounds) / np.array(denominator.rounds)
    draws = np.random.default_rng(0).choice(ratios, size=(2000, len(ratios)))
    low, high = np.percentile(np.median(draws, axis=1), [2.5, 97.5])
    return float(np.median(ratios)), float(low), float(high)


def measure_once(
    url: str, variant: Variant, connections: int, duration_s: float, image: Path, wrk_threads: int = 1
) -> Point:
    before = batch_totals(url, variant.model) if variant.server == "service" and variant.model else None
    rate, p50, p99, errors = parse_wrk(run_wrk(url, connections, duration_s, image, variant.model, wrk_threads))
    mean_batch = batch_ms = None
    if before is not None and variant.model:
        after = batch_totals(url, variant.model)
        forwards = after[1] - before[1]
        if forwards:
            mean_batch, batch_ms = (after[0] - before[0]) / forwards, (after[2] - before[2]) / forwards * 1e3
    return Point(variant, connections, rate, p50, p99, mean_batch, errors, batch_ms=batch_ms)


def parallel_speedup(seconds: float = 0.5) -> float:
    """How many cores the machine really gives right now: the work two busy processes get done side by
    side over what one gets done alone (2.0 on two free cores). This VM sometimes gives about one."""
    command = [
        sys.executable,
        "-c",
        f"import time\nend = time.perf_counter() + {seconds}\nn = 0\nwhile time.perf_counter() < end: n += 1\nprint(n)",
    ]

    def counts(processes: int) -> int:
        running = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
        return sum(int(process.communicate()[0]) for process in running)

    return counts(2) / counts(1)


def format_row(point: Point) -> str:
    batch = "" if point.mean_batch is None else f"{point.mean_batch:.1f}"
    batch_ms = "" if point.batch_ms is None else f"{point.batch_ms:.2f}"
    rate = f"{point.requests_per_s:,.{1 if point.requests_per_s < 100 else 0}f}"  # photos come a few a second
    return (
        f"| {point.variant.label} | {point.variant.model or '-'} | {point.connections} | "
        f"{rate} | {point.p50_ms:.2f} | {point.p99_ms:.2f} | {batch} | {batch_ms} | {point.errors} |"
    )


TABLE_HEAD = (
    "| server | model | connections | requests/s | p50 ms | p99 ms | mean batch | ms per batch | errors |\n"
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def table(points: list[Point]) -> str:
    return TABLE_HEAD + "\n" + "\n".join(format_row(point) for point in points)


def find(points: list[Point], variant: Variant, connections: int) -> Point | None:
    for point in points:
        if point.variant == variant and point.connections == connections:
            return point
    return None


def comparisons(points: list[Point]) -> list[str]:
    """Per worker count, the ratios a reader compares where this run measured them."""
    workers = sorted({p.variant.workers for p in points})
    return [line for w in workers for line in comparisons_at(points, w)]


def comparisons_at(points: list[Point], workers: int) -> list[str]:
    """At 32 connections (or the most measured) the service against each peer, and at every connection count
    the service against the naive peer (what batching costs when idle), all with ``workers`` processes."""
    lines = []
    measured = sorted({p.connections for p in points})
    many = 32 if 32 in measured else measured[-1]
    floor = find(points, Variant("floor", None, workers=workers), many)
    suffix = f" ({workers} workers)" if workers > 1 else ""
    for model in dict.fromkeys(p.variant.model for p in points if p.variant.server == "service"):
        batched = find(points, Variant("service", model, workers=workers), many)
        if batched is None:
            continue
        parts = [f"mean batch {batched.mean_batch:.1f}" if batched.mean_batch else "mean batch n/a"]
        for name, other in (
            ("batch 1", find(points, Variant("service", model, 1, workers=workers), many)),
            ("threads", find(points, Variant("service", model, backend="thread", workers=workers), many)),
            ("child process", find(points, Variant("service", model, backend="process", workers=workers), many)),
            ("naive", find(points, Variant("naive", model, workers=workers), many)),
            ("floor", floor),
        ):
            if other is not None and other.requests_per_s:
                parts.append(f"{batched.requests_per_s / other.requests_per_s:.2f}× {name}")
        parts.append(f"p99/p50 {batched.p99_ms / batched.p50_ms:.1f}")
        if (single := find(points, Variant("service", model, workers=workers), 1)) is not None:
            parts.append(f"p99 at 1 connection {single.p99_ms:.2f} ms")
        lines.append(f"- `{model}`{suffix}, {many} connections: " + ", ".join(parts))
        against_naive = []
        for connections in measured:
            service, naive = (
                find(points, Variant("service", model, workers=workers), connections),
                find(points, Variant("naive", model, workers=workers), connections),
            )
            if service is not None and naive is not None and naive.requests_per_s:
                text = f"{service.requests_per_s / naive.requests_per_s:.2f}× at {connections}"
                if (paired := paired_ratio(service, naive)) is not None:
                    text += f" (round by round {paired[0]:.2f}×, 95% interval {paired[1]:.2f}–{paired[2]:.2f})"
                against_naive.append(text)
        if against_naive:
            lines.append(
                f"- `{model}`{suffix}, service / naive by connections, fastest runs (median of within-round ratios): "
                + ", ".join(against_naive)
            )
    return lines


def shipped_backend(model: str) -> str:
    """Where ``dae-serve`` (DAE_INFERENCE_BACKEND=auto, on this machine) runs ``model``: loop, thread or process."""
    from models.checkpoint import load_checkpoint
    from service.placement import available_cores, serving_backend
    from service.settings import Settings, shipped_checkpoint_dir

    net = load_checkpoint(shipped_checkpoint_dir() / f"{model}.json")[0]
    photos = model == Settings().default_photo_model
    return serving_backend("auto", torch.device("cpu"), net, available_cores(), photos)


def serving_dtype() -> str:
    """The precision ``dae-serve`` picks for the U-Net here by default (bfloat16 where the CPU has it)."""
    from models.architectures import create_model
    from models.device import dtype_name
    from service.placement import serving_dtype as placed_dtype

    return dtype_name(placed_dtype("auto", torch.device("cpu"), create_model("conv")))


def describe_image(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        kind = "digit" if (width, height) == (28, 28) else "photo"
        return f"a {width}×{height} PNG {kind} (`{path.relative_to(REPO) if path.is_relative_to(REPO) else path}`)"


def report(points: list[Point], args: argparse.Namespace, command: str, speedups: list[float]) -> str:
    return f"""Loopback load from `wrk` (one thread, `bench/serve_post.lua`) posting {describe_image(args.image)} to
`/denoise` with `Accept: image/png` on the same machine as the server. Every server runs at once and
each round measures them all in turn at each number of connections; a point is the fastest of
{args.repeats} rounds' runs of {args.duration:g} s (this VM sometimes gives its processes about one core's worth
of time for a stretch, which the two-process service feels and the one-process floor does not); the
service / naive lines also give the median of the ratios within each round (the two measured a few runs
apart, every other round in reverse order) with its 95% bootstrap interval: it stands when the machine's
speed drifts between rounds.
`service` is `dae-serve` as shipped (dynamic batching, up to 32 images per forward pass, the
digit U-Net's batches in a child process here, the photo model's in inference threads, a request alone
in the server and the MLP's forwards on the event loop: `DAE_INFERENCE_BACKEND=auto`,
the U-Net's in {serving_dtype()}:
`DAE_INFERENCE_DTYPE=auto`, the MLP's in float32); `service, batch 1` the same with
`DAE_MAX_BATCH_SIZE=1`; `service, threads` the same with the forwards in inference threads of the
server process (`DAE_INFERENCE_BACKEND=thread`), `service, child process` with them in the child
(`DAE_INFERENCE_BACKEND=process`); `naive` the model run per request inside the
endpoint in float32, as the tutorial does (`bench/serve_naive.py`); `floor` decode and encode with no
model (`bench/serve_floor.py`). Mean batch is images per forward pass and ms per batch the mean time of
one batch where it runs (the copies in and out included; on CUDA, the GPU's time per batch), both from the
service's `/metrics`.
A label ending `N workers` is the same server with N processes sharing the port (`--workers`); wrk ran
{args.wrk_threads} load thread(s), at most one per connection.

- Command: `{command}`
- Device: {device_description("auto")}, {os.cpu_count()} cores; {wrk_version()}
- Parallel speed-up of two busy processes over one (2.0 on two free cores), before and after:
  {speedups[0]:.2f}, {speedups[-1]:.2f}
- Measured: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC

{table(points)}

{chr(10).join(comparisons(points))}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=int, default=5, help="whole seconds of load per run (wrk takes no fractions; default 5)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per point, the fastest kept (default 3)")
    parser.add_argument("--connections", type=int, nargs="+", default=list(CONNECTIONS))
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="the PNG to post")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1], help="server processes per variant, each count in turn"
    )
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk's load threads (default 1)")
    parser.add_argument(
        "--skip",
        nargs="+",
        choices=["naive", "backend"],
        default=[],
        help="variants to leave out: the naive server, the service with its other inference backend (on CUDA "
        "every forward runs in an inference thread, so that one is the service again)",
    )
    parser.add_argument(
        "--section", default="Serving", help="the docs/benchmarks.md section to write (default Serving)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("serve_benchmark: wrk is missing (apt-get install -y wrk)", file=sys.stderr)
        return 2
    variants = []
    for workers in args.workers:
        variants.append(Variant("floor", None, workers=workers))
        for model in args.models:
            variants += [Variant("service", model, workers=workers), Variant("service", model, 1, workers=workers)]
            # The other backend once, with one worker: threads, or the child process where the shipped service
            # runs threads (the photo model).
            if workers == 1 and "backend" not in args.skip:
                other = "thread" if shipped_backend(model) != "thread" else "process"
                variants.append(Variant("service", model, backend=other))
            if "naive" not in args.skip:
                variants.append(Variant("naive", model, workers=workers))
    connections = tuple(args.connections)
    speedups = [parallel_speedup()]
    print(f"device: {device_description('auto')}, {os.cpu_count()} cores; parallel speed-up {speedups[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as log_dir:
        points = measure(
            variants, connections, args.duration, args.repeats, args.image, Path(log_dir), args.wrk_threads
        )
    speedups.append(parallel_speedup())
    print(table(points))
    print("\n".join(comparisons(points)))
    if not args.no_write:
        command = "python -m bench.serve_benchmark" + (
            "" if argv is None and len(sys.argv) == 1 else " " + shlex.join(argv if argv is not None else sys.argv[1:])
        )
        write_section(args.section, report(points, args, command, speedups))
        print(f"written to docs/benchmarks.md (## {args.section})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
