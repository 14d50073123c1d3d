"""Soak: the service under steady load for a long while, driven by ``wrk``; does it keep its pace and memory?

``dae-serve`` runs as shipped on 127.0.0.1; after a short warm-up, ``wrk`` (one thread,
``bench/serve_post.lua``) posts a 28×28 PNG digit to ``/denoise`` with ``Accept: image/png`` at 32
connections for ``--duration`` seconds (default 600), in consecutive slices (default 30 s), so that
throughput, p50/p99 latency and errors (non-2xx answers, socket errors) are known per slice: over time.
Meanwhile the server's resident memory (its process and any worker children, read from ``/proc``) is
sampled every ``--sample`` seconds. The result goes to the "Soak" section of docs/benchmarks.md.

    python -m bench.soak                                         # 10 minutes (make bench-soak)
    python -m bench.soak --duration 30 --slice 10 --no-write     # a quick look, printed only
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import device_description, write_section
from bench.loopback import (
    DEFAULT_IMAGE,
    Variant,
    free_port,
    launched,
    milliseconds,
    run_wrk,
    server_command,
    wrk_version,
)

MiB = 1 << 20


@dataclass(frozen=True)
class Slice:
    """One wrk run of the soak."""

    start_s: float  # since the soak began
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    rss_end: int  # bytes, the last sample taken during the slice
    rss_peak: int


def parse_slice(output: str) -> tuple[int, float, float, float, int, int]:
    """(requests, requests/s, p50 ms, p99 ms, non-2xx, socket errors) from ``wrk --latency``."""

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.M)
        if match is None:
            raise ValueError(f"wrk output without {pattern!r}:\n{output}")
        return match

    requests = int(find(r"(\d+) requests in").group(1))
    rate = float(find(r"Requests/sec:\s+([\d.]+)").group(1))
    p50 = milliseconds(find(r"^\s+50%\s+(\S+)").group(1))
    p99 = milliseconds(find(r"^\s+99%\s+(\S+)").group(1))
    non_2xx_match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = int(non_2xx_match.group(1)) if non_2xx_match else 0
    socket_errors = sum(int(n) for n in socket_match.groups()) if socket_match else 0
    return requests, rate, p50, p99, non_2xx, socket_errors


def _rss_of(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn's worker processes with DAE_WORKERS > 1), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name may hold spaces and parentheses: the fields after its last ')' are safe.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def tree_rss(pid: int) -> int:
    return sum(_rss_of(member) for member in process_tree(pid))


class RssSampler:
    """Samples the server's resident memory every ``interval_s`` in a background thread."""

    def __init__(self, pid: int, interval_s: float) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []  # (perf_counter, bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), tree_rss(self.pid)))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> list[int]:
        return [rss for at, rss in self.samples if start <= at <= end]


@contextmanager
def serving(model: str, log_dir: Path) -> Iterator[tuple[str, int]]:
    """``dae-serve`` as shipped (default model ``model``) on a free port: yields (url, pid), then stops it."""
    port = free_port()
    command, env = server_command(Variant("service", model), port)
    with launched(command, env, log_dir / "dae-serve.log", port, "/readyz", "dae-serve") as (url, pid):
        yield url, pid


def soak(args: argparse.Namespace, log_dir: Path) -> tuple[list[Slice], int]:
    """Run the slices; returns them and the server's RSS right after the warm-up."""
    slices: list[Slice] = []
    with serving(args.model, log_dir) as (url, pid):
        run_wrk(url, args.connections, args.warm_up, args.image, args.model)  # caches, allocator, kernels
        baseline = tree_rss(pid)
        with RssSampler(pid, args.sample) as sampler:
            began = time.perf_counter()
            remaining = args.duration
            while remaining > 0.5:
                length = min(args.slice, remaining)
                started = time.perf_counter()
                output = run_wrk(url, args.connections, length, args.image, args.model)
                ended = time.perf_counter()
                sampled = sampler.between(started, ended) or [tree_rss(pid)]
                counts = parse_slice(output)
                piece = Slice(started - began, *counts, rss_end=sampled[-1], rss_peak=max(sampled))
                print(format_row(piece), flush=True)
                slices.append(piece)
                remaining -= length
    return slices, baseline


def format_row(piece: Slice) -> str:
    return (
        f"| {piece.start_s:,.0f} | {piece.requests:,} | {piece.requests_per_s:,.0f} | {piece.p50_ms:.2f} | "
        f"{piece.p99_ms:.2f} | {piece.non_2xx} | {piece.socket_errors} | {piece.rss_end / MiB:.1f} | "
        f"{piece.rss_peak / MiB:.1f} |"
    )


TABLE_HEAD = (
    "| from s | requests | requests/s | p50 ms | p99 ms | non-2xx | socket errors | RSS MiB (end) | RSS MiB (peak) |\n"
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def summary(slices: list[Slice], baseline: int) -> list[str]:
    """The figures that say whether the service held up: totals, errors, the p99 spread, memory drift."""
    requests = sum(piece.requests for piece in slices)
    seconds = sum(piece.requests / piece.requests_per_s for piece in slices if piece.requests_per_s)
    rates = [piece.requests_per_s for piece in slices]
    p99s = [piece.p99_ms for piece in slices]
    half = len(slices) // 2
    lines = [
        f"- {requests:,} requests in {seconds:,.0f} s: {requests / seconds:,.0f} requests/s on average; slowest "
        f"slice {min(rates):,.0f}, fastest {max(rates):,.0f}; last slice / first slice "
        f"{rates[-1] / rates[0]:.2f}",
        f"- p99 per slice: median {statistics.median(p99s):.2f} ms, worst {max(p99s):.2f} ms",
        f"- errors: {sum(p.non_2xx for p in slices)} non-2xx answers, {sum(p.socket_errors for p in slices)} socket "
        "errors",
        f"- server RSS: {baseline / MiB:.1f} MiB after the warm-up, {slices[-1].rss_end / MiB:.1f} MiB at the end, "
        f"{max(p.rss_peak for p in slices) / MiB:.1f} MiB at its peak",
    ]
    if half:
        drift = slices[-1].rss_end - slices[half - 1].rss_end
        lines.append(f"- RSS over the second half of the run: {drift / MiB:+.1f} MiB")
    return lines


def report(slices: list[Slice], baseline: int, args: argparse.Namespace, command: str) -> str:
    rows = "\n".join(format_row(piece) for piece in slices)
    return f"""Loopback load from `wrk` (one thread, `bench/serve_post.lua`) posting a 28×28 PNG digit to
`/denoise` (model `{args.model}`, `Accept: image/png`) at {args.connections} connections for {args.duration:g} s,
in consecutive {args.slice:g} s slices after a {args.warm_up:g} s warm-up; `dae-serve` as shipped, on the same
machine. RSS is the server's resident memory (its process and any workers, from `/proc`), sampled every
{args.sample:g} s: the last and the highest sample of each slice.

- Command: `{command}`
- Device: {device_description("auto")}, {os.cpu_count()} cores; {wrk_version()}
- Measured: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC

{chr(10).join(summary(slices, baseline))}

{TABLE_HEAD}
{rows}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load in all (default 600)")
    parser.add_argument("--slice", type=float, default=30.0, help="seconds per wrk run, one table row (default 30)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--model", default="conv-blind", help="the model asked for (default conv-blind)")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="the PNG to post")
    parser.add_argument("--warm-up", type=float, default=5.0, help="seconds of load before measuring (default 5)")
    parser.add_argument("--sample", type=float, default=2.0, help="seconds between RSS samples (default 2)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.slice <= 0 or args.connections < 1:
        parser.error("--duration and --slice must be positive, --connections at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("soak: wrk is missing (apt-get install -y wrk)", file=sys.stderr)
        return 2
    print(f"device: {device_description('auto')}, {os.cpu_count()} cores\n{TABLE_HEAD}", flush=True)
    with tempfile.TemporaryDirectory(prefix="soak-") as log_dir:
        slices, baseline = soak(args, Path(log_dir))
    print("\n".join(summary(slices, baseline)))
    if not args.no_write:
        given = sys.argv[1:] if argv is None else argv
        command = "python -m bench.soak" + (" " + " ".join(given) if given else "")
        write_section("Soak", report(slices, baseline, args, command))
        print("written to docs/benchmarks.md (## Soak)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
