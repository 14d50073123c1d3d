"""The benchmarks' servers on loopback and ``wrk`` against them: a server variant started as its own process on
127.0.0.1 (``dae-serve``, the naive app or the floor app) and stopped with its whole process group, ``wrk`` posting
an image to ``/denoise`` through ``bench/serve_post.lua``, its output read, and the service's batch counters from
``/metrics``. ``bench.serve_benchmark``, ``bench.photo_benchmark`` and ``bench.soak`` measure with these.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
LUA_SCRIPT = REPO / "bench" / "serve_post.lua"
DEFAULT_IMAGE = REPO / "service" / "static" / "samples" / "digit-7.png"  # an MNIST test digit, 28×28
START_TIMEOUT_S = 300.0
_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}
BACKEND_LABELS = {"thread": "threads", "process": "child process", "loop": "event loop"}


@dataclass(frozen=True)
class Variant:
    server: str  # service, naive or floor
    model: str | None
    batch_size: int | None = None  # the service's DAE_MAX_BATCH_SIZE
    backend: str | None = None  # the service's DAE_INFERENCE_BACKEND
    workers: int = 1  # server processes sharing the port (dae-serve --workers, uvicorn --workers)

    @property
    def label(self) -> str:
        parts = [self.server]
        if self.server == "service":
            parts += [f"batch {self.batch_size}"] if self.batch_size is not None else []
            parts += [BACKEND_LABELS[self.backend]] if self.backend is not None else []
        parts += [f"{self.workers} workers"] if self.workers > 1 else []
        return ", ".join(parts)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_command(variant: Variant, port: int) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAE_", "PROMETHEUS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # and the wheels'
    # dae-serve takes uvicorn's spelling of these
    options = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--workers", str(variant.workers)]
    if variant.server == "service":
        env["DAE_DEFAULT_MODEL"] = variant.model or ""
        if variant.batch_size is not None:
            env["DAE_MAX_BATCH_SIZE"] = str(variant.batch_size)
        if variant.backend is not None:
            env["DAE_INFERENCE_BACKEND"] = variant.backend
        return [sys.executable, "-m", "service", *options], env
    env["SERVE_NAIVE_MODEL"] = variant.model or ""
    app = "bench.serve_floor:app" if variant.server == "floor" else "bench.serve_naive:app"
    return [sys.executable, "-m", "uvicorn", app, *options, "--no-access-log"], env


@contextmanager
def running(variant: Variant, log_dir: Path) -> Iterator[str]:
    """Start the variant's server, wait until it answers, yield its URL, stop it (its whole group)."""
    port = free_port()
    command, env = server_command(variant, port)
    log_path = log_dir / f"{variant.label.replace(', ', '-').replace(' ', '-')}-{variant.model}.log"
    probe = "/readyz" if variant.server == "service" else "/healthz"
    with launched(command, env, log_path, port, probe, variant.label) as (url, _):
        yield url


@contextmanager
def launched(
    command: list[str], env: dict[str, str], log_path: Path, port: int, probe: str, label: str
) -> Iterator[tuple[str, int]]:
    """Run a server command in its own process group until ``probe`` answers 200; yield (url, pid)."""
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{label} exited during start-up:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label} not ready after {START_TIMEOUT_S:g} s")
            try:
                if httpx.get(url + probe, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url, process.pid
    finally:
        with suppress(ProcessLookupError):  # it exited during start-up: the error above says why
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_wrk(url: str, connections: int, duration_s: float, image: Path, model: str | None, threads: int = 1) -> str:
    env = {**os.environ, "SERVE_BENCH_IMAGE": str(image), "SERVE_BENCH_MODEL": model or ""}
    command = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        url + "/denoise",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=duration_s + 60, check=True)
    return result.stdout


def milliseconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, non-2xx responses plus socket errors) from ``wrk --latency``."""
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = milliseconds(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = milliseconds(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    if non_2xx := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        errors += int(non_2xx.group(1))
    if socket_errors := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors += sum(int(n) for n in socket_errors.groups())
    return rate, p50, p99, errors


def batch_totals(url: str, model: str) -> tuple[float, float, float]:
    """(images, forward passes, seconds in them) so far for ``model``, from the service's histograms."""
    text = httpx.get(url + "/metrics", timeout=10).text

    def value(name: str) -> float:
        match = re.search(rf'^{name}\{{model="{re.escape(model)}"\}} (\S+)$', text, re.M)
        return float(match.group(1)) if match else 0.0

    return value("dae_batch_size_sum"), value("dae_batch_size_count"), value("dae_inference_seconds_sum")


def wrk_version() -> str:
    result = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (result.stdout or result.stderr).splitlines()[0].strip()
