"""Load and overload on real sockets (127.0.0.1 only), every loop bounded in requests and in time.

- 64 clients send a few thousand requests, a third of them bad: each gets its own status, never a 5xx,
  and the server's memory settles (RSS read after a warm-up round and after each of two equal rounds).
- 256 clients against a queue of 8: only 200s and 503s with ``Retry-After``; ready again afterwards.
- A client that disconnects mid-upload or mid-request, and one that uploads a byte at a time, cost the
  others nothing: their requests are answered and nothing of the broken ones is left behind. A client that
  leaves while its photo's tiles are computing takes the rest of them with it.

No test here asserts a wall-clock time; throughput belongs in ``bench/``.
"""

from __future__ import annotations

import asyncio
import gc
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from service.batcher import ArrivalToken
from service.denoiser import Denoised, Prepared
from tests.conftest import FIXTURE_ROOT
from tests.service.conftest import MODELS_IN_PROCESS, LiveServer, png_bytes, runner_in_process
from tests.service.test_images import png_declaring
from tests.service.test_server import MODEL, Gate, gate_model, metric, wait_until

PHOTO_MODEL = "photo-blind"
COLOUR_PHOTO = FIXTURE_ROOT / "colour" / "coffee.png"  # 96×96 RGB
PHASE_DEADLINE_S = 180.0  # a bound on each phase, far above what it takes; no assertion reads the clock
MiB = 1 << 20


def rss_bytes() -> int:
    """Resident memory of this process (the server runs in it, on its own thread), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix and the status it must get."""

    name: str
    status: int
    route: str
    files: list[tuple[str, tuple[str, bytes, str]]] | None
    data: dict[str, str]
    headers: dict[str, str]


def request_mix(digits: list[bytes], max_upload_bytes: int) -> list[Kind]:
    digit, other = digits[0], digits[1]
    png = "image/png"
    noise = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
    oversized = png_bytes(noise)
    assert len(oversized) > max_upload_bytes
    return [
        Kind("denoise", 200, "/denoise", [("file", ("a.png", digit, png))], {"model": MODEL}, {"Accept": "image/png"}),
        Kind("denoise-noise", 200, "/denoise", [("file", ("b.png", other, png))], {"noise": "gaussian"}, {}),
        Kind("corrupt", 200, "/corrupt", [("file", ("c.png", digit, png))], {"noise": "masking", "seed": "1"}, {}),
        Kind(
            "batch",
            200,
            "/denoise/batch",
            [("file", ("d.png", digit, png)), ("file", ("e.png", other, png))],
            {"model": MODEL},
            {},
        ),
        Kind("denoise-2", 200, "/denoise", [("file", ("f.png", other, png))], {"model": MODEL}, {}),
        Kind("garbage", 400, "/denoise", [("file", ("g.png", b"\x89PNG garbage" * 20, png))], {}, {}),
        Kind("unknown-model", 404, "/denoise", [("file", ("h.png", digit, png))], {"model": "no-such"}, {}),
        Kind("bad-level", 422, "/corrupt", [("file", ("i.png", digit, png))], {"noise": "gaussian", "level": "7"}, {}),
        Kind("no-file", 422, "/denoise", None, {"noise": "gaussian"}, {}),
        Kind("bomb", 413, "/denoise", [("file", ("j.png", png_declaring(40000, 40000), png))], {}, {}),
        Kind("too-many-bytes", 413, "/corrupt", [("file", ("k.png", oversized, png))], {"noise": "gaussian"}, {}),
    ]


async def _drive(
    url: str, clients: int, count: int, choose: Callable[[int], Kind]
) -> tuple[Counter[tuple[str, int]], list[str]]:
    """``count`` requests from ``clients`` concurrent connections; (kind, status) counts and transport errors."""
    statuses: Counter[tuple[str, int]] = Counter()
    errors: list[str] = []
    next_index = iter(range(count))
    deadline = time.monotonic() + PHASE_DEADLINE_S
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as client:

        async def worker() -> None:
            for index in next_index:
                if time.monotonic() > deadline:
                    return
                kind = choose(index)
                try:
                    response = await client.post(kind.route, files=kind.files, data=kind.data, headers=kind.headers)
                    statuses[(kind.name, response.status_code)] += 1
                except httpx.TransportError as exc:
                    errors.append(f"{kind.name}: {type(exc).__name__}: {exc}")

        await asyncio.gather(*(worker() for _ in range(clients)))
    return statuses, errors


def drive(url: str, clients: int, count: int, choose: Callable[[int], Kind]) -> Counter[tuple[str, int]]:
    statuses, errors = asyncio.run(_drive(url, clients, count, choose))
    assert not errors, f"{len(errors)} transport errors, e.g. {errors[:3]}"
    assert sum(statuses.values()) == count, f"only {sum(statuses.values())} of {count} answered in time"
    return statuses


def live_objects(*types: type) -> int:
    gc.collect()
    return sum(1 for item in gc.get_objects() if isinstance(item, types))


@pytest.mark.slow
def test_64_clients_with_bad_requests_mixed_in_get_no_5xx_and_memory_settles(
    make_server: Any, digits: list[bytes]
) -> None:
    max_upload = 16 * 1024
    server: LiveServer = make_server(max_upload_bytes=max_upload, max_batch_size=32)
    mix = request_mix(digits, max_upload)
    expected = {kind.name: kind.status for kind in mix}

    def choose(index: int) -> Kind:
        return mix[index % len(mix)]

    drive(server.url, 64, 256, choose)  # warm-up: allocator pools, connection buffers, oneDNN's kernels
    rss = [rss_bytes()]
    totals: Counter[tuple[str, int]] = Counter()
    for _ in range(2):
        totals += drive(server.url, 64, 896, choose)
        rss.append(rss_bytes())
    wrong = {key: n for key, n in totals.items() if key[1] != expected[key[0]]}
    assert not wrong, f"unexpected statuses: {wrong}"
    assert {status for _, status in totals} == {200, 400, 404, 413, 422}
    growth_first, growth_second = rss[1] - rss[0], rss[2] - rss[1]
    print("RSS after warm-up, round 1, round 2: " + ", ".join(f"{value / MiB:.1f} MiB" for value in rss))
    # Settled: the second round of 896 requests grows memory by less than 16 MiB (under 20 kB a request,
    # where an upload kept per request would add its image, its arrays and its answer).
    assert growth_second < 16 * MiB, f"RSS grew {growth_first / MiB:.1f} then {growth_second / MiB:.1f} MiB"
    # And nothing of a request outlives it (the server finishes a request just after its answer is sent).
    wait_until(lambda: live_objects(Denoised, Prepared, ArrivalToken) == 0, "the last requests' objects to go")
    batcher = server.store.denoisers[MODEL].batcher
    assert batcher is not None and batcher.queue_size == 0
    assert server.app.state.arrivals.pending == 0


class Slowed(torch.nn.Module):
    """The real model, plus a pause in each forward: a model heavier than the tiny shipped ones, so that
    256 clients overload a queue of 8 whatever the machine. The pause sleeps (no CPU, no GIL)."""

    def __init__(self, model: torch.nn.Module, pause_s: float) -> None:
        super().__init__()
        self.model = model
        self.pause_s = pause_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.pause_s)
        out: torch.Tensor = self.model(x)
        return out


async def _overload(url: str, clients: int, per_client: int, body: dict[str, Any]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as client:

        async def one_client() -> list[httpx.Response]:
            return [await client.post("/denoise", **body) for _ in range(per_client)]

        per = await asyncio.wait_for(asyncio.gather(*(one_client() for _ in range(clients))), PHASE_DEADLINE_S)
    return [response for responses in per for response in responses]


def test_256_clients_against_a_queue_of_8_get_200s_and_503s_with_retry_after_then_readiness(
    make_server: Any, digit: bytes
) -> None:
    server: LiveServer = make_server(max_queue_size=8, max_batch_size=8, **MODELS_IN_PROCESS)
    runner = runner_in_process(server.store, MODEL)
    runner.model = Slowed(runner.model, 0.02)
    body: dict[str, Any] = {
        "files": {"file": ("d.png", digit, "image/png")},
        "data": {"model": MODEL},
        "headers": {"Accept": "image/png"},
    }
    rejected_before = metric(httpx.get(server.url + "/metrics").text, "dae_batcher_rejected_total", model=MODEL)
    responses = asyncio.run(_overload(server.url, 256, 1, body))
    statuses = Counter(response.status_code for response in responses)
    print(f"256 clients against a queue of 8: {dict(statuses)}")
    assert set(statuses) == {200, 503}, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1"
            assert "DAE_MAX_QUEUE_SIZE" in response.json()["detail"]
        else:
            assert response.content.startswith(b"\x89PNG")
    rejected = metric(httpx.get(server.url + "/metrics").text, "dae_batcher_rejected_total", model=MODEL)
    assert rejected - rejected_before == statuses[503]  # every 503 was the queue refusing, counted
    assert httpx.get(server.url + "/readyz").status_code == 200
    assert server.store.denoisers[MODEL].batcher.queue_size == 0
    assert httpx.post(server.url + "/denoise", **body).status_code == 200


def multipart(digit: bytes, model: str = MODEL) -> tuple[bytes, bytes]:
    """(headers, body) of a /denoise request, for clients that write to the socket themselves."""
    body = (
        b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\n' + model.encode() + b"\r\n"
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\nContent-Type: image/png\r\n\r\n'
        + digit
        + b"\r\n--b--\r\n"
    )
    head = (
        b"POST /denoise HTTP/1.1\r\nHost: test\r\nAccept: image/png\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head, body


def read_status(connection: socket.socket) -> int:
    answer = b""
    while b"\r\n" not in answer:
        chunk = connection.recv(4096)
        assert chunk, "the server closed the connection without answering"
        answer += chunk
    match = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    assert match, answer[:100]
    return int(match.group(1))


async def _concurrent_posts(url: str, digits: list[bytes], count: int, clients: int) -> list[int]:
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:

        async def post(index: int) -> int:
            files = {"file": ("d.png", digits[index % len(digits)], "image/png")}
            response = await client.post("/denoise", files=files, data={"model": MODEL})
            return response.status_code

        return list(await asyncio.gather(*(post(i) for i in range(count))))


def test_clients_that_disconnect_mid_upload_or_mid_request_cost_the_others_nothing(
    make_server: Any, digits: list[bytes]
) -> None:
    server: LiveServer = make_server(**MODELS_IN_PROCESS)
    release = threading.Event()
    gate = gate_model(server, lambda _: release.is_set())
    head, body = multipart(digits[0])
    statuses_before = httpx.get(server.url + "/metrics").text
    # Mid-request: the whole request sent, then gone while its image is in the forward pass.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as quitter:
        quitter.sendall(head + body)
        assert gate.entered.wait(20)
    # Mid-upload: half the body, then gone.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as half:
        half.sendall(head + body[: len(body) // 2])
    release.set()
    statuses = asyncio.run(_concurrent_posts(server.url, digits, 48, 16))
    assert statuses == [200] * 48
    # Nothing of the two broken requests is left: no request on its way, nothing queued, still ready.
    wait_until(lambda: server.app.state.arrivals.pending == 0, "the aborted upload to be let go")
    assert server.store.denoisers[MODEL].batcher.queue_size == 0
    assert httpx.get(server.url + "/readyz").status_code == 200
    # The cut upload is counted as the client's leaving (499), not as a client's mistake (400).
    statuses_after = httpx.get(server.url + "/metrics").text
    assert 'route="/denoise",status="499"' in statuses_after
    assert _count(statuses_after, "400") == _count(statuses_before, "400")


def _count(metrics_text: str, status: str) -> float:
    """Answers to POST /denoise with ``status`` so far (0 when there were none)."""
    labels = {"method": "POST", "route": "/denoise", "status": status}
    if f'route="/denoise",status="{status}"' not in metrics_text:
        return 0.0
    return metric(metrics_text, "dae_http_requests_total", **labels)


def test_a_client_that_leaves_during_its_photo_takes_the_photos_remaining_tiles_with_it(
    make_server: Any, digits: list[bytes]
) -> None:
    """96 tile forwards for a colour photo (16 tiles a plane, R, G, B and opponent planes); its client leaves
    while the first is held in the model: the rest never run, and the request is counted as 499."""
    server: LiveServer = make_server(tile_size=32, tile_overlap=8, max_batch_size=2)  # two tiles in flight
    runner = runner_in_process(server.store, PHOTO_MODEL)
    release = threading.Event()
    runner.model = gate = Gate(runner.model, lambda _: release.is_set())
    text = lambda: httpx.get(server.url + "/metrics").text  # noqa: E731

    tiles_before = metric(text(), "dae_batch_size_sum", model=PHOTO_MODEL)
    left_before = _count(text(), "499")
    head, body = multipart(COLOUR_PHOTO.read_bytes(), model=PHOTO_MODEL)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as leaver:
        leaver.sendall(head + body)
        assert gate.entered.wait(20)
    wait_until(lambda: _count(text(), "499") == left_before + 1, "the request to be counted as left")
    release.set()
    wait_until(lambda: server.app.state.arrivals.pending == 0, "the request to be let go")
    wait_until(lambda: server.store.denoisers[PHOTO_MODEL].batcher.queue_size == 0, "the queue to empty")
    assert metric(text(), "dae_batch_size_sum", model=PHOTO_MODEL) - tiles_before <= 4  # two forwards of two
    answer = httpx.post(server.url + "/denoise", files={"file": ("d.png", digits[0])}, data={"model": PHOTO_MODEL})
    assert answer.status_code == 200


def test_a_client_uploading_a_byte_at_a_time_costs_the_others_nothing(make_server: Any, digits: list[bytes]) -> None:
    """While one client trickles its upload, others are answered; batches do not wait for the slow one.

    A batch waits up to ``max_batch_delay_ms`` for requests on their way; here that is 10 s, so a batcher
    that kept waiting for the trickling upload would hold every other request for 10 s, past the 5 s the
    other clients give each answer.
    """
    server: LiveServer = make_server(max_batch_delay_ms=10_000)
    head, body = multipart(digits[0])
    finish = threading.Event()
    outcome: dict[str, Any] = {}

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as slow:
            slow.sendall(head)
            sent = 0
            while sent < len(body) - 1 and not finish.wait(0.02):  # a byte every 20 ms, at most ~30 s
                slow.sendall(body[sent : sent + 1])
                sent += 1
            outcome["sent_before_finish"] = sent
            slow.sendall(body[sent:])
            outcome["status"] = read_status(slow)

    slow_client = threading.Thread(target=trickle, daemon=True)
    slow_client.start()
    wait_until(lambda: server.app.state.arrivals.announced >= 1, "the slow upload to arrive")

    async def others() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as client:

            async def one_client(offset: int) -> list[int]:
                statuses = []
                for i in range(16):
                    files = {"file": ("d.png", digits[(offset + i) % len(digits)], "image/png")}
                    statuses.append((await client.post("/denoise", files=files, data={"model": MODEL})).status_code)
                return statuses

            per_client = await asyncio.gather(*(one_client(offset) for offset in range(4)))
        return [status for statuses in per_client for status in statuses]

    statuses = asyncio.run(others())
    still_uploading = slow_client.is_alive() and "status" not in outcome
    finish.set()
    slow_client.join(timeout=30)
    assert statuses == [200] * 64
    assert still_uploading, "the slow upload finished before the others were answered: make it slower"
    assert outcome["status"] == 200  # and the slow client is answered too, once it has sent everything
    assert outcome["sent_before_finish"] < len(body) - 1
