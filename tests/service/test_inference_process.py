"""The inference process (DAE_INFERENCE_BACKEND=process, the default on a CPU with two cores or more):
the forwards run in a child process that answers exactly as the inference threads do, shares batches,
survives being killed or getting stuck at the cost of one batch, and goes away with the server."""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from torch import nn

from service import placement
from service.app import create_app
from service.batcher import Arrivals, DynamicBatcher, RunBatch
from service.errors import Unavailable
from service.inference import InferenceRunner, Prediction
from service.inference_process import InferenceProcess, ProcessRunner
from tests.service.conftest import AppClient, LiveServer, settings_for

PROCESS = {"inference_backend": "process"}
FIELDS = {"model": "conv-blind", "noise": "gaussian", "level": "0.4", "seed": "11"}


def is_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie not yet reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def inference_process(client: AppClient | LiveServer) -> InferenceProcess:
    process = client.app.state.store.process
    assert isinstance(process, InferenceProcess), "the service did not start an inference process"
    return process


def batch_results(client: AppClient, digits: list[bytes]) -> list[dict[str, Any]]:
    files = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(digits[:8])]
    response = client.post("/denoise/batch", files=files, data=FIELDS)
    assert response.status_code == 200, response.text
    return [item["result"] for item in response.json()["results"]]


def test_a_child_process_answers_exactly_as_the_inference_threads_do_and_stops_with_the_server(
    make_client: Callable[..., AppClient], digits: list[bytes]
) -> None:
    threads = batch_results(make_client(inference_backend="thread"), digits)
    client = AppClient(create_app(settings_for(**PROCESS)))
    try:
        client.wait_ready()
        pid = inference_process(client).pid
        assert pid != os.getpid()
        assert pid in [child.pid for child in multiprocessing.active_children()]
        in_child = batch_results(client, digits)
        for mine, theirs in zip(in_child, threads, strict=True):
            assert mine["denoised_psnr_db"] > mine["noisy_psnr_db"] + 5
            assert np.isclose(mine["denoised_psnr_db"], theirs["denoised_psnr_db"], atol=1e-4), (mine, theirs)
            assert np.isclose(mine["reconstruction_mse"], theirs["reconstruction_mse"], rtol=1e-4)
        png = client.post(
            "/denoise", files={"file": ("d.png", digits[0], "image/png")}, headers={"Accept": "image/png"}
        )
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    finally:
        client.close()
    deadline = time.monotonic() + 10
    while not is_gone(pid):
        assert time.monotonic() < deadline, "the inference process outlived the server"
        time.sleep(0.05)


def test_a_killed_inference_process_costs_one_batch_a_503_and_a_new_one_takes_over(
    make_client: Callable[..., AppClient], digits: list[bytes]
) -> None:
    client = make_client(**PROCESS)
    process = inference_process(client)
    old_pid = process.pid
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not is_gone(old_pid):
        assert time.monotonic() < deadline, "SIGKILL did not stop the inference process"
        time.sleep(0.01)
    upload = {"file": ("d.png", digits[1], "image/png")}
    # Another request in the worker: with company, requests go to the child (alone, one runs on the event loop).
    arrivals = client.app.state.arrivals
    company = arrivals.announce()
    try:
        failed = client.post("/denoise", files=upload, data=FIELDS)
        assert failed.status_code == 503, failed.text
        assert failed.headers["Retry-After"] == "1"
        assert "inference process" in failed.json()["detail"]
        assert client.get("/readyz").status_code == 200
        answered = client.post("/denoise", files=upload, data=FIELDS)  # the next batch starts a new child
    finally:
        company.done()
        arrivals.leave()
    assert answered.status_code == 200, answered.text
    assert answered.json()["denoised_psnr_db"] > answered.json()["noisy_psnr_db"]
    assert process.restarts == 1
    assert process.pid != old_pid


def test_concurrent_clients_share_batches_in_the_child_process(
    make_server: Callable[..., LiveServer], digits: list[bytes]
) -> None:
    server = make_server(max_batch_size=16, max_batch_delay_ms=50, **PROCESS)
    inference_process(server)

    async def post_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            posts = [
                http.post(
                    "/denoise", files={"file": ("d.png", digits[i % 16], "image/png")}, data={"model": "conv-blind"}
                )
                for i in range(48)
            ]
            return list(await asyncio.gather(*posts))

    responses = asyncio.run(post_all())
    assert [response.status_code for response in responses] == [200] * 48
    metrics = httpx.get(server.url + "/metrics").text

    def total(name: str) -> float:
        match = re.search(rf'^dae_batch_size_{name}\{{model="conv-blind"\}} (\S+)$', metrics, re.M)
        assert match, metrics
        return float(match.group(1))

    images, forwards = total("sum"), total("count")
    assert images >= 48 and forwards < images, f"{images:g} images in {forwards:g} forwards: no batch of two or more"


def test_models_says_where_each_model_runs_and_auto_keeps_the_mlps_on_the_event_loop(
    make_client: Callable[..., AppClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(placement, "available_cores", lambda: 2)

    def backends(client: AppClient) -> dict[str, str]:
        models = client.get("/models").json()["models"]
        return {m["architecture"]: m["inference_backend"] for m in models if m["architecture"] in ("conv", "mlp")}

    # auto: an MLP's forward is shorter than a hop to a thread, so only the U-Nets leave the event loop.
    assert backends(make_client(inference_backend="auto")) == {"conv": "process", "mlp": "loop"}
    assert backends(make_client(inference_backend="process")) == {"conv": "process", "mlp": "process"}
    thread_client = make_client(inference_backend="thread")
    assert backends(thread_client) == {"conv": "thread", "mlp": "thread"}
    assert thread_client.store.process is None


class StallsOnWhite(nn.Module):
    """The identity, except that an all-white batch never finishes: a forward stuck for good."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x >= 1).all()):
            time.sleep(3600)
        return x


def test_a_stuck_inference_process_is_replaced_once_a_batch_outlives_the_request_deadline() -> None:
    process = InferenceProcess([("stall", StallsOnWhite(), torch.float32)], torch_threads=1, batch_timeout_s=1.0)
    process.start()
    try:
        grey = [np.full((28, 28), 0.5, dtype=np.float32)]
        (first,) = process.run("stall", grey)  # waits for the child to start: no deadline on that
        assert isinstance(first, Prediction) and np.allclose(first.output, 0.5)
        stuck_pid = process.pid
        (stuck,) = process.run("stall", [np.ones((28, 28), dtype=np.float32)])
        assert isinstance(stuck, Unavailable) and stuck.status_code == 503
        assert process.restarts == 1 and process.pid != stuck_pid and is_gone(stuck_pid)
        (after,) = process.run("stall", grey)
        assert isinstance(after, Prediction) and np.allclose(after.output, 0.5)
    finally:
        process.shutdown()


class ShowsItsThreads(nn.Module):
    """Answers every pixel with a tenth of the intra-op threads its forward ran with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, torch.get_num_threads() / 10)


class ShowsItsThreadsAndWhere(ShowsItsThreads):
    """``ShowsItsThreads`` that also notes the thread (of this process) each forward ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.ran_in: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.ran_in.append(threading.get_ident())
        return super().forward(x)


def alone_then_together(batcher: DynamicBatcher, arrivals: Arrivals) -> tuple[int, list[int]]:
    """The intra-op threads of a request alone in the worker, then of three that arrive together."""

    async def request() -> int:  # what the HTTP layer does around a batched route
        token = arrivals.announce()
        try:
            prediction = await batcher.predict(np.zeros((4, 4), dtype=np.float32), token)
            return round(float(prediction.output[0, 0]) * 10)
        finally:
            token.done()
            arrivals.leave()

    async def scenario() -> tuple[int, list[int]]:
        batcher.start()
        try:
            alone = await request()
            together = await asyncio.gather(*(request() for _ in range(3)))
            return alone, list(together)
        finally:
            await batcher.stop()

    return asyncio.run(scenario())


def batcher_for(
    run_batch: RunBatch, pool: ThreadPoolExecutor | None, arrivals: Arrivals, **alone: Any
) -> DynamicBatcher:
    return DynamicBatcher(
        "threads", run_batch, pool, max_batch_size=8, max_batch_delay_s=0.0, max_queue_size=8, timeout_s=30.0,
        arrivals=arrivals, **alone,
    )  # fmt: skip


def test_a_request_alone_in_the_worker_runs_on_the_event_loop_with_every_core_and_company_goes_to_the_child() -> None:
    """The naive server's path when there is nothing else to serve (no hop to the child and back), the child's
    batches as soon as there is."""
    process = InferenceProcess([("threads", ShowsItsThreads(), torch.float32)], torch_threads=1, batch_timeout_s=30.0)
    pool = ThreadPoolExecutor(2)
    model = ShowsItsThreadsAndWhere()
    here = InferenceRunner("threads", model, torch.device("cpu"))
    arrivals = Arrivals()
    run_alone = functools.partial(here.run, threads=3)
    batcher = batcher_for(
        ProcessRunner("threads", process).run, pool, arrivals, run_alone=run_alone, alone_on_loop=True
    )
    process.start()
    before = torch.get_num_threads()
    try:
        alone, together = alone_then_together(batcher, arrivals)
    finally:
        process.shutdown()
        pool.shutdown(wait=True)
    assert alone == 3 and model.ran_in == [threading.get_ident()]  # on the event loop, with the threads given
    assert together == [1, 1, 1]  # in the child, at its one thread
    assert torch.get_num_threads() == before  # the event loop's own setting is back


def test_on_the_event_loop_a_request_alone_gets_every_core_and_company_the_loops_own_setting() -> None:
    """The MLPs' path: alone, the naive server's threads; batched, the one thread the server keeps for itself."""
    model = ShowsItsThreadsAndWhere()
    runner = InferenceRunner("threads", model, torch.device("cpu"))
    arrivals = Arrivals()
    batcher = batcher_for(runner.run, None, arrivals, run_alone=functools.partial(runner.run, threads=2))
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the server's setting beside a child process (placement.py)
    try:
        alone, together = alone_then_together(batcher, arrivals)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert alone == 2 and together == [1, 1, 1] and after == 1
    assert set(model.ran_in) == {threading.get_ident()}  # all on the event loop


def test_with_threads_a_request_alone_in_the_worker_gets_every_core_in_its_inference_thread() -> None:
    pool = ThreadPoolExecutor(2, initializer=torch.set_num_threads, initargs=(1,))
    model = ShowsItsThreadsAndWhere()
    runner = InferenceRunner("threads", model, torch.device("cpu"))
    arrivals = Arrivals()
    batcher = batcher_for(runner.run, pool, arrivals, run_alone=functools.partial(runner.run, threads=2))
    try:
        alone, together = alone_then_together(batcher, arrivals)
    finally:
        pool.shutdown(wait=True)
    assert alone == 2 and threading.get_ident() not in model.ran_in  # every core, and never on the event loop
    assert together == [1, 1, 1]  # with company, the threads' own setting
