"""Graceful shutdown of `dae-serve`, as `docker stop` / `docker compose down` do it: one SIGTERM.

The service is started the way the image starts it (``dae-serve``, here on 127.0.0.1 at a free port),
over the shipped checkpoints. Twenty clients each send the headers and the first half of a /denoise
upload of a real MNIST digit, so the server holds twenty requests it has accepted and not answered;
then SIGTERM. While those requests are still open the server must refuse new ones; once their bodies
arrive every one of them must get its 200, and the process must exit 0 within compose's
stop_grace_period.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import CHECKPOINT_DIR, FIXTURE_ROOT
from tests.deploy.conftest import COMPOSE, load_compose, serve_command
from tests.deploy.test_compose import duration_s

IN_FLIGHT = 20
READY_TIMEOUT_S = 180.0  # six models loaded twice (verify, then serve) and warmed up on a busy CPU
HEADERS_GRACE_S = 1.5  # for the server to read the headers already sent before the signal
REFUSAL_WINDOW_S = 10.0
BOUNDARY = "dae-deploy-graceful-shutdown"


def digit_png() -> bytes:
    from training.data import read_idx

    images = read_idx(FIXTURE_ROOT / "mnist" / "t10k-images-idx3-ubyte.gz")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(images[0])).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(png: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="digit.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[[int], Server]]:
    started: list[Server] = []

    def start(workers: int) -> Server:
        port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith("DAE_")}
        env.update(
            DAE_CHECKPOINT_DIR=str(CHECKPOINT_DIR),
            # The reference model, shipped first; the test is about shutdown, not about which is default.
            DAE_DEFAULT_MODEL="mlp-gaussian",
            DAE_WORKERS=str(workers),
            DAE_TORCH_THREADS="1",  # a modest guest on a shared machine
            DAE_MAX_BATCH_SIZE="4",  # several batches, so some requests queue behind others during shutdown
            DAE_MAX_BATCH_DELAY_MS="200",
            DAE_LOG_LEVEL="info",
        )
        log = tmp_path / f"dae-serve-{len(started)}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                serve_command("127.0.0.1", port),
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the cleanup below reaches its workers
            )
        server = Server(process, f"http://127.0.0.1:{port}", log)
        started.append(server)
        # Ready = /readyz 200 on several fresh connections in a row: with several workers each answers
        # for itself, and the connections land on whichever worker accepts first.
        deadline = time.monotonic() + READY_TIMEOUT_S
        in_a_row = 0
        for _ in range(int(READY_TIMEOUT_S / 0.2) + 5 * workers):  # bounded in count as well as in time
            assert process.poll() is None, (
                f"dae-serve exited ({process.returncode}) during start-up:\n{server.output()}"
            )
            assert time.monotonic() < deadline, f"not ready after {READY_TIMEOUT_S:g} s:\n{server.output()}"
            try:
                ready = httpx.get(server.url + "/readyz", timeout=2.0).status_code == 200
            except httpx.TransportError:
                ready = False
            in_a_row = in_a_row + 1 if ready else 0
            if in_a_row >= 5 * workers:
                return server
            time.sleep(0.05 if ready else 0.2)
        pytest.fail(f"not ready after {READY_TIMEOUT_S:g} s:\n{server.output()}")

    yield start
    for server in started:
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=30)


@dataclass
class HeldRequest:
    """A /denoise upload sent in two halves, the second only once ``release`` is set."""

    url: str
    body: bytes
    release: threading.Event
    head_sent: threading.Event = field(default_factory=threading.Event)
    response: httpx.Response | None = None
    error: BaseException | None = None

    def chunks(self) -> Iterator[bytes]:
        half = len(self.body) // 2
        yield self.body[:half]
        self.head_sent.set()  # reached once the first half has been written to the socket
        self.release.wait(timeout=120)
        yield self.body[half:]

    def run(self) -> None:
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Content-Length": str(len(self.body))}
        try:
            with httpx.Client(timeout=httpx.Timeout(120.0, connect=10.0)) as client:
                self.response = client.post(self.url + "/denoise", content=self.chunks(), headers=headers)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.head_sent.set()


def new_request_refused(url: str) -> bool:
    """True when a new request is not served: refused, reset, unanswered, or answered 503."""
    try:
        return httpx.get(url + "/healthz", timeout=2.0).status_code == 503
    except httpx.TransportError:
        return True


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
def test_sigterm_finishes_accepted_requests_and_exits_0(start_server: Callable[[int], Server], workers: int) -> None:
    grace_s = duration_s(load_compose(COMPOSE)["services"]["api"]["stop_grace_period"])
    server = start_server(workers)
    body = multipart(digit_png())
    release = threading.Event()
    held = [HeldRequest(server.url, body, release) for _ in range(IN_FLIGHT)]
    threads = [threading.Thread(target=request.run, daemon=True) for request in held]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        for request in held:
            assert request.head_sent.wait(max(0.0, deadline - time.monotonic())), "a client could not start sending"
        errors_before = [repr(request.error) for request in held if request.error is not None]
        assert not errors_before, f"requests failed before the signal: {errors_before}\n{server.output()}"
        time.sleep(HEADERS_GRACE_S)

        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)

        # Stops accepting: while the twenty are still open, a new request is not served.
        refused = False
        for _ in range(int(REFUSAL_WINDOW_S / 0.1)):
            refused = new_request_refused(server.url)
            if refused or time.monotonic() - signalled > REFUSAL_WINDOW_S:
                break
            time.sleep(0.1)
        assert refused, f"still serving new requests {REFUSAL_WINDOW_S:g} s after SIGTERM:\n{server.output()}"
        assert server.process.poll() is None, (
            f"dae-serve exited ({server.process.returncode}) while holding {IN_FLIGHT} open requests:\n"
            f"{server.output()}"
        )
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=60)

    failures = []
    for number, request in enumerate(held):
        if request.error is not None:
            failures.append(f"request {number}: {request.error!r}")
        elif request.response is None or request.response.status_code != 200:
            status = None if request.response is None else request.response.status_code
            text = "" if request.response is None else request.response.text[:200]
            failures.append(f"request {number}: HTTP {status} {text}")
        else:
            answer = request.response.json()
            if not answer.get("denoised_png") or answer.get("model") != "mlp-gaussian":
                failures.append(f"request {number}: unexpected answer {sorted(answer)}")
    assert not failures, (
        "accepted requests not answered after SIGTERM:\n"
        + "\n".join(failures)
        + (f"\n--- dae-serve output ---\n{server.output()}")
    )

    remaining = grace_s - (time.monotonic() - signalled)
    try:
        code = server.process.wait(timeout=max(remaining, 0.1))
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"dae-serve still running {grace_s:g} s (compose's stop_grace_period) after SIGTERM:\n{server.output()}"
        )
    hint = ""
    if code == -signal.SIGTERM:
        hint = (
            "\nuvicorn (>= 0.29) re-raises the SIGTERM it handled once its graceful shutdown is done; with the "
            "default handler back in place that kills the process. dae-serve has to handle SIGTERM itself "
            "(e.g. signal.signal(SIGTERM, handler raising SystemExit(0)) before uvicorn.run) to exit 0."
        )
    assert code == 0, (
        f"dae-serve exited with {code} after SIGTERM ({'killed by signal ' + str(-code) if code < 0 else 'error'}); "
        f"compose and orchestrators read anything but 0 as a failure.{hint}\n{server.output()}"
    )
