"""The service on real sockets: requests from concurrent clients share batches, a full queue answers 503,
a late answer 504, several worker processes report one set of metrics, and a bad checkpoint stops
``dae-serve`` before it serves."""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from tests.conftest import CHECKPOINT_DIR
from tests.service.conftest import MODELS_IN_PROCESS, LiveServer, decode_png, runner_in_process

MODEL = "mlp-gaussian"
WAIT_S = 20.0


class Gate(torch.nn.Module):
    """Wraps the real model: the first forward waits until ``ready(its batch size)`` holds; later ones pass."""

    def __init__(self, model: torch.nn.Module, ready: Callable[[int], bool]) -> None:
        super().__init__()
        self.model = model
        self.ready = ready
        self.opened = False
        self.entered = threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        deadline = time.monotonic() + WAIT_S
        while not self.opened and not self.ready(x.shape[0]) and time.monotonic() < deadline:
            time.sleep(0.002)
        self.opened = True
        out: torch.Tensor = self.model(x)
        return out


def gate_model(server: LiveServer, ready: Callable[[int], bool]) -> Gate:
    runner = runner_in_process(server.store, MODEL)
    gate = Gate(runner.model, ready)
    runner.model = gate
    return gate


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def post_digit(url: str, digit: bytes) -> httpx.Response:
    return httpx.post(
        url + "/denoise",
        files={"file": ("d.png", digit, "image/png")},
        data={"model": MODEL},
        headers={"Accept": "image/png"},
        timeout=WAIT_S + 10,
    )


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{{{wanted}}} not in /metrics"
    return float(match.group(1))


async def post_in_bursts(url: str, model: str, digits: list[bytes], clients: int, rounds: int) -> list[httpx.Response]:
    """``rounds`` bursts of ``clients`` posts sent at once from one event loop: requests that reach the server
    together, as under load. (Client threads in this process would take turns at its GIL and could trickle in one
    by one.) Request i posts digit i mod len(digits)."""
    responses: list[httpx.Response] = []
    async with httpx.AsyncClient(base_url=url, timeout=WAIT_S + 10) as http:
        for _ in range(rounds):
            posts = [
                http.post("/denoise", files={"file": ("d.png", digits[i % len(digits)], "image/png")},
                          data={"model": model}, headers={"Accept": "image/png"})
                for i in range(clients)
            ]  # fmt: skip
            responses += await asyncio.gather(*posts)
    return responses


def test_concurrent_clients_share_a_batch(make_server: Any, digits: list[bytes]) -> None:
    clients = 8
    server = make_server(max_batch_size=16, max_batch_delay_ms=20, **MODELS_IN_PROCESS)
    batcher = server.store.denoisers[MODEL].batcher
    before = httpx.get(server.url + "/metrics").text
    # The first forward holds until every request has arrived, as happens under load when it takes a while.
    gate_model(server, lambda in_forward: in_forward + batcher.queue_size >= clients)
    with ThreadPoolExecutor(clients) as pool:
        responses = list(pool.map(lambda d: post_digit(server.url, d), digits[:clients]))
    assert [r.status_code for r in responses] == [200] * clients
    after = httpx.get(server.url + "/metrics").text
    forwards = metric(after, "dae_batch_size_count", model=MODEL) - metric(before, "dae_batch_size_count", model=MODEL)
    images = metric(after, "dae_batch_size_sum", model=MODEL) - metric(before, "dae_batch_size_sum", model=MODEL)
    assert images == clients
    assert forwards < clients, "every request ran alone"
    single = metric(after, "dae_batch_size_bucket", le="1.0", model=MODEL)
    assert single - metric(before, "dae_batch_size_bucket", le="1.0", model=MODEL) < forwards  # a batch > 1


def test_on_the_event_loop_a_lone_request_runs_alone_and_concurrent_ones_share_forwards(
    make_server: Any, digits: list[bytes]
) -> None:
    """The MLP's forwards run on the event loop (auto): no batch waits for a lone request, yet requests that
    come in together are batched, thanks to the batcher's look around."""
    server = make_server(max_batch_size=32)
    assert {m["name"]: m["inference_backend"] for m in httpx.get(server.url + "/models").json()["models"]}[MODEL] == (
        "loop"
    )

    def forwards_and_images() -> tuple[float, float]:
        text = httpx.get(server.url + "/metrics").text
        return metric(text, "dae_batch_size_count", model=MODEL), metric(text, "dae_batch_size_sum", model=MODEL)

    before = forwards_and_images()
    for digit in digits[:5]:
        assert post_digit(server.url, digit).status_code == 200
    after = forwards_and_images()
    assert (after[0] - before[0], after[1] - before[1]) == (5, 5)  # one at a time: five batches of one

    clients, rounds = 16, 8
    responses = asyncio.run(post_in_bursts(server.url, MODEL, digits, clients, rounds))
    assert [r.status_code for r in responses] == [200] * (clients * rounds)
    final = forwards_and_images()
    forwards, images = final[0] - after[0], final[1] - after[1]
    assert images == clients * rounds
    assert forwards < images, "concurrent requests never shared a forward"

    files = [("file", (f"{i}.png", digit, "image/png")) for i, digit in enumerate(digits[:8])]
    assert httpx.post(server.url + "/denoise/batch", files=files, data={"model": MODEL}, timeout=30).status_code == 200
    batch = forwards_and_images()
    assert batch[1] - final[1] == 8 and batch[0] - final[0] <= 2, "one request's images did not share forwards"


@pytest.mark.cuda
@pytest.mark.parametrize("model", ["conv-blind", "mlp-gaussian"])
def test_on_cuda_concurrent_clients_share_batches_and_get_what_a_cpu_pinned_server_gives(
    make_server: Any, digits: list[bytes], model: str
) -> None:
    gpu = make_server(device="cuda", max_batch_size=32, max_batch_delay_ms=20)
    cpu = make_server(device="cpu")
    assert gpu.store.denoisers[model].placement.device.type == "cuda"
    assert cpu.store.denoisers[model].placement.device.type == "cpu"
    before = httpx.get(gpu.url + "/metrics").text
    clients, rounds = 32, 4
    responses = asyncio.run(post_in_bursts(gpu.url, model, digits, clients, rounds))
    assert [r.status_code for r in responses] == [200] * (clients * rounds)
    after = httpx.get(gpu.url + "/metrics").text
    forwards = metric(after, "dae_batch_size_count", model=model) - metric(before, "dae_batch_size_count", model=model)
    images = metric(after, "dae_batch_size_sum", model=model) - metric(before, "dae_batch_size_sum", model=model)
    assert images == clients * rounds and images / forwards > 1, f"mean batch {images / forwards:.2f}"

    # The same digits through a CPU-pinned server: cuDNN's TF32 convolutions may move a pixel by a grey level.
    on_cpu = asyncio.run(post_in_bursts(cpu.url, model, digits, len(digits), 1))
    for i, response in enumerate(responses):
        expected = decode_png(on_cpu[i % len(digits)].content).astype(int)
        difference = np.abs(decode_png(response.content).astype(int) - expected)
        assert difference.max() <= 2 and difference.mean() <= 0.25, (i, difference.max(), difference.mean())


def test_a_full_queue_answers_503_with_retry_after_then_recovers(make_server: Any, digit: bytes) -> None:
    server = make_server(max_batch_size=1, max_queue_size=2, **MODELS_IN_PROCESS)
    release = threading.Event()
    batcher = server.store.denoisers[MODEL].batcher
    gate = gate_model(server, lambda _: release.is_set())
    with ThreadPoolExecutor(3) as pool:
        held: list[Future[httpx.Response]] = [pool.submit(post_digit, server.url, digit)]
        assert gate.entered.wait(WAIT_S)  # the first is in the forward...
        held += [pool.submit(post_digit, server.url, digit) for _ in range(2)]
        wait_until(lambda: batcher.queue_size == 2, "two queued requests")  # ...two more fill the queue
        refused = post_digit(server.url, digit)
        release.set()
        answered = [future.result() for future in held]
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "DAE_MAX_QUEUE_SIZE" in refused.json()["detail"]
    assert [r.status_code for r in answered] == [200, 200, 200]
    assert post_digit(server.url, digit).status_code == 200


def test_a_request_past_its_deadline_answers_504_and_the_next_is_served(make_server: Any, digit: bytes) -> None:
    server = make_server(request_timeout_s=0.3, **MODELS_IN_PROCESS)
    release = threading.Event()
    gate_model(server, lambda _: release.is_set())
    late = post_digit(server.url, digit)
    release.set()
    assert late.status_code == 504
    assert "deadline" in late.json()["detail"]
    assert post_digit(server.url, digit).status_code == 200


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "service", "--host", "127.0.0.1", *args]


def stop(process: subprocess.Popen[bytes]) -> None:
    """Ctrl+C, as a person stops dae-serve; killed if it has not exited 30 s later."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAE_", "PROMETHEUS_"))}
    return {**env, "DAE_TORCH_THREADS": "1", **extra}


@pytest.mark.slow
def test_workers_share_the_port_and_metrics_cover_all_of_them(digit: bytes, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w+")
    process = subprocess.Popen(
        serve_command("--port", str(port), "--workers", "2", "--checkpoint-dir", str(CHECKPOINT_DIR)),
        env=clean_env(DAE_MAX_BATCH_SIZE="4"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        pids: set[str] = set()
        while len(pids) < 2:  # both workers up (each reports itself once its app has started)
            assert process.poll() is None, Path(log.name).read_text()
            assert time.monotonic() < deadline, "two workers did not come up"
            try:
                text = httpx.get(url + "/metrics", timeout=5).text
                pids = set(re.findall(r'^dae_worker_up\{pid="(\d+)"\} 1\.0$', text, re.MULTILINE))
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        # Every worker warmed up, not just the one that happens to answer: ten fresh connections in a row
        # (the kernel spreads them over the workers) all find /readyz at 200.
        wait_until(
            lambda: all(httpx.get(url + "/readyz", timeout=5).status_code == 200 for _ in range(10)),
            "both workers' readiness",
        )
        for _ in range(10):  # a new connection each: the kernel spreads them over the workers
            assert post_digit(url, digit).status_code == 200
        text = httpx.get(url + "/metrics", timeout=5).text
        assert metric(text, "dae_http_requests_total", method="POST", route="/denoise", status="200") == 10
        assert metric(text, "dae_batch_size_sum", model=MODEL) == 10
    finally:
        stop(process)
        log.close()


def test_dae_serve_refuses_a_damaged_checkpoint_naming_the_file(checkpoint_copy: Path) -> None:
    weights = sorted(checkpoint_copy.glob("*.safetensors"))[0]
    weights.write_bytes(weights.read_bytes()[:-100])
    result = subprocess.run(
        serve_command("--checkpoint-dir", str(checkpoint_copy), "--port", str(free_port())),
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert str(weights) in result.stderr and "sha256" in result.stderr


@pytest.mark.slow
def test_dae_serve_keeps_an_idle_connection_open_until_the_client_lets_go(tmp_path: Path) -> None:
    """An idle connection outlives the clients' own idle expiry (httpx's 5 s, and uvicorn's own default is also
    5 s): when the server closes first, a request sent into the closing connection is lost to a reset."""
    folder = tmp_path / "checkpoints"  # one small model: start-up in a second or two
    folder.mkdir()
    for suffix in (".json", ".safetensors"):
        (folder / f"{MODEL}{suffix}").write_bytes((CHECKPOINT_DIR / f"{MODEL}{suffix}").read_bytes())
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            serve_command("--port", str(port), "--checkpoint-dir", str(folder)),
            env=clean_env(DAE_DEFAULT_MODEL=MODEL),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:

        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, "dae-serve to be ready")
        # http.client reads each answer whole (a raw socket can see the body arrive after the headers) and, unlike
        # httpx, never reconnects behind the test's back: the second request goes down the first one's socket.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", "/healthz")
            assert connection.getresponse().read() == b'{"status":"ok"}'
            first_socket = connection.sock
            time.sleep(6.5)  # idle past both 5 s expiries
            try:
                connection.request("GET", "/healthz")
                second = connection.getresponse()
                second.read()
            except (http.client.HTTPException, ConnectionError) as error:
                pytest.fail(f"the server closed an idle connection: {error!r}")
            assert second.status == 200 and connection.sock is first_socket
        finally:
            connection.close()
    finally:
        stop(process)
