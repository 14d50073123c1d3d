"""The dynamic batcher and the inference runner on their own: batching, deadlines, a full queue, faults."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torch import nn

from service import inference
from service.batcher import Arrivals, DynamicBatcher
from service.errors import DeadlineExceeded, InferenceFailed, TooLarge, Unavailable
from service.inference import InferenceRunner, Outcome, Prediction


class Recorder:
    """A run_batch that records the size of every call and answers each image with its own mean."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, inputs: list[np.ndarray]) -> list[Outcome]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        self.sizes.append(len(inputs))
        return [Prediction(x, float(x.mean())) for x in inputs]


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(1)
    yield pool
    pool.shutdown(wait=True)


def make_batcher(run: Recorder, executor: ThreadPoolExecutor | None, **options: float) -> DynamicBatcher:
    settings = {"max_batch_size": 8, "max_batch_delay_s": 0.0, "max_queue_size": 64, "timeout_s": 10.0, **options}
    return DynamicBatcher(
        "test",
        run,
        executor,
        max_batch_size=int(settings["max_batch_size"]),
        max_batch_delay_s=settings["max_batch_delay_s"],
        max_queue_size=int(settings["max_queue_size"]),
        timeout_s=settings["timeout_s"],
    )


def image(value: float, shape: tuple[int, int] = (4, 4)) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def test_requests_queued_together_share_one_forward(executor: ThreadPoolExecutor) -> None:
    run = Recorder()

    async def scenario() -> list[float]:
        batcher = make_batcher(run, executor)
        futures = [batcher.enqueue(image(i / 10)) for i in range(6)]
        batcher.start()
        results = await asyncio.gather(*futures)
        await batcher.stop()
        return [r.reconstruction_mse for r in results]

    means = asyncio.run(scenario())
    assert run.sizes == [6]
    assert means == pytest.approx([i / 10 for i in range(6)])  # each request got its own answer


def test_batches_are_capped_and_split_by_shape(executor: ThreadPoolExecutor) -> None:
    run = Recorder()

    async def scenario() -> list[tuple[int, ...]]:
        batcher = make_batcher(run, executor, max_batch_size=4)
        futures = [batcher.enqueue(image(0.5, (4, 4) if i % 2 else (6, 5))) for i in range(6)]
        batcher.start()
        results = await asyncio.gather(*futures)
        await batcher.stop()
        return [r.output.shape for r in results]

    shapes = asyncio.run(scenario())
    assert shapes == [(6, 5), (4, 4)] * 3
    # First batch: the first four (two of each shape) as two forwards; then the last two, one of each.
    assert run.sizes == [2, 2, 1, 1]


def test_the_worker_waits_for_announced_arrivals(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    arrivals = Arrivals()

    async def scenario() -> None:
        batcher = DynamicBatcher(
            "test",
            run,
            executor,
            max_batch_size=8,
            max_batch_delay_s=5.0,
            max_queue_size=8,
            timeout_s=10.0,
            arrivals=arrivals,
        )
        batcher.start()
        tokens = [arrivals.announce() for _ in range(3)]
        futures = [batcher.enqueue(image(0.1), tokens[0])]
        for token in tokens[1:]:
            await asyncio.sleep(0.01)  # the worker is waiting for these two
            futures.append(batcher.enqueue(image(0.2), token))
        await asyncio.gather(*futures)
        await batcher.stop()

    asyncio.run(scenario())
    assert run.sizes == [3]
    assert arrivals.pending == 0


def test_a_full_queue_refuses_at_once_with_retry_after(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    run = Recorder(gate)

    async def scenario() -> None:
        batcher = make_batcher(run, executor, max_batch_size=1, max_queue_size=2)
        batcher.start()
        first = batcher.enqueue(image(0.1))
        while not run.entered.is_set():  # the worker holds the first in the forward...
            await asyncio.sleep(0.005)
        queued = [batcher.enqueue(image(0.2)), batcher.enqueue(image(0.3))]  # ...two more fill the queue
        with pytest.raises(Unavailable) as refused:
            batcher.enqueue(image(0.4))
        assert refused.value.headers["Retry-After"] == "1"
        gate.set()
        await asyncio.gather(first, *queued)
        await batcher.stop()

    asyncio.run(scenario())
    assert run.sizes == [1, 1, 1]


def test_a_request_past_its_deadline_gets_504_and_the_batcher_goes_on(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    run = Recorder(gate)

    async def scenario() -> None:
        batcher = make_batcher(run, executor, timeout_s=0.05)
        batcher.start()
        with pytest.raises(DeadlineExceeded, match="deadline"):
            await batcher.predict(image(0.1))
        gate.set()
        assert (await batcher.predict(image(0.3))).reconstruction_mse == pytest.approx(0.3)
        await batcher.stop()

    asyncio.run(scenario())


def test_stop_answers_what_is_still_queued_with_503(executor: ThreadPoolExecutor) -> None:
    async def scenario() -> None:
        batcher = make_batcher(Recorder(), executor)  # never started: everything stays queued
        future = batcher.enqueue(image(0.1))
        await batcher.stop()
        with pytest.raises(Unavailable):
            await future

    asyncio.run(scenario())


class Fragile(nn.Module):
    """Identity that raises on any batch holding an all-white image, or (as CUDA would) on big batches."""

    def __init__(self, max_batch: int | None = None, oom: bool = False) -> None:
        super().__init__()
        self.max_batch = max_batch
        self.oom = oom
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        if self.max_batch is not None and x.shape[0] > self.max_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if bool((x.flatten(1).min(dim=1).values >= 1.0).any()):
            raise RuntimeError("white images break this model")
        return x * 0.5


def test_out_of_memory_splits_the_batch_instead_of_failing_it() -> None:
    model = Fragile(max_batch=2)
    outcomes = InferenceRunner("fragile", model, torch.device("cpu")).run([image(0.2)] * 8)
    assert all(isinstance(o, Prediction) for o in outcomes)
    assert model.calls == [8, 4, 2, 2, 4, 2, 2]


def test_an_image_too_big_for_memory_alone_is_413() -> None:
    (outcome,) = InferenceRunner("fragile", Fragile(max_batch=0), torch.device("cpu")).run([image(0.2)])
    assert isinstance(outcome, TooLarge)


def test_a_forward_that_raises_fails_only_its_own_image() -> None:
    inputs = [image(0.2), image(0.4), image(1.0), image(0.6)]
    outcomes = InferenceRunner("fragile", Fragile(), torch.device("cpu")).run(inputs)
    assert isinstance(outcomes[2], InferenceFailed) and "white images" in outcomes[2].detail
    for i in (0, 1, 3):
        prediction = outcomes[i]
        assert isinstance(prediction, Prediction)
        np.testing.assert_allclose(prediction.output, inputs[i] * 0.5)
        assert prediction.reconstruction_mse == pytest.approx(float((inputs[i][0, 0] * 0.5) ** 2))


@pytest.mark.cuda
def test_cuda_runner_stages_both_copies_in_pinned_memory_and_returns_host_arrays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    staged: list[tuple[torch.device, torch.Tensor]] = []
    pinned_copy = inference.pinned_copy

    def recorded(tensor: torch.Tensor) -> torch.Tensor:
        staged.append((tensor.device, pinned_copy(tensor)))
        return staged[-1][1]

    device = torch.device("cuda")
    model = nn.Identity().to(device)
    monkeypatch.setattr(inference, "pinned_copy", recorded)
    outcomes = InferenceRunner("identity", model, device).run([image(0.25), image(0.75)])
    assert [source.type for source, _ in staged] == ["cpu", "cuda"]  # the batch in, the output back
    assert all(copy.is_pinned() and copy.device.type == "cpu" for _, copy in staged)
    for outcome, value in zip(outcomes, (0.25, 0.75), strict=True):
        assert isinstance(outcome, Prediction)
        assert isinstance(outcome.output, np.ndarray)
        np.testing.assert_allclose(outcome.output, value)
        assert outcome.reconstruction_mse == 0.0


@pytest.mark.cuda
def test_a_real_cuda_out_of_memory_splits_the_batch_and_every_image_is_answered() -> None:
    device = torch.device("cuda", torch.cuda.current_device())  # the memory cap wants the index
    torch.manual_seed(0)
    # 64 float32 channels of a 1024×1024 image hold 256 MiB, and the ReLU makes a second such tensor: eight images
    # cannot fit under a 1 GiB cap, one can.
    model = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 1, 3, padding=1)).to(device)
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda _, args: sizes.append(args[0].shape[0]))
    inputs = [np.random.default_rng(i).random((1024, 1024), dtype=np.float32) for i in range(8)]
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(2**30 / torch.cuda.get_device_properties(device).total_memory, device)
    try:
        outcomes = InferenceRunner("wide", model, device).run(inputs)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    assert sizes[0] == 8 and len(sizes) > 1, f"the batch of 8 did not run out of memory and split: {sizes}"
    assert all(isinstance(o, Prediction) for o in outcomes), [type(o).__name__ for o in outcomes]
    with torch.inference_mode():
        for x, outcome in zip(inputs, outcomes, strict=True):
            alone = model(torch.from_numpy(x)[None, None].to(device))[0, 0].cpu().numpy()
            assert isinstance(outcome, Prediction)
            np.testing.assert_allclose(outcome.output, alone, atol=1e-3)


def test_with_two_inference_threads_two_batches_compute_at_once() -> None:
    both_in = threading.Barrier(2, timeout=10)

    class Meet(Recorder):
        def __call__(self, inputs: list[np.ndarray]) -> list[Outcome]:
            both_in.wait()  # returns only once the other batch is computing too
            return super().__call__(inputs)

    run = Meet()
    pool = ThreadPoolExecutor(2)

    async def scenario() -> None:
        batcher = DynamicBatcher(
            "test",
            run,
            pool,
            max_batch_size=2,
            max_batch_delay_s=0.0,
            max_queue_size=8,
            timeout_s=10.0,
            max_in_flight=2,
        )
        futures = [batcher.enqueue(image(i / 10)) for i in range(4)]
        batcher.start()
        await asyncio.gather(*futures)
        await batcher.stop()

    try:
        asyncio.run(scenario())
    finally:
        pool.shutdown(wait=True)
    assert run.sizes == [2, 2]


def test_without_an_executor_forwards_run_on_the_event_loop_alone_or_batched() -> None:
    """A lone request computes at once in the event loop's thread; requests that arrive together share a forward."""
    threads: list[int] = []
    recorder = Recorder()

    def run(inputs: list[np.ndarray]) -> list[Outcome]:
        threads.append(threading.get_ident())
        return recorder(inputs)

    async def scenario() -> list[float]:
        arrivals = Arrivals()
        batcher = DynamicBatcher(
            "test", run, None, max_batch_size=8, max_batch_delay_s=0.0, max_queue_size=64, timeout_s=10.0,
            arrivals=arrivals,
        )  # fmt: skip

        async def request(value: float) -> float:  # what the HTTP layer does around a batched route
            token = arrivals.announce()
            try:
                return (await batcher.predict(image(value), token)).reconstruction_mse
            finally:
                token.done()
                arrivals.leave()

        batcher.start()
        try:
            alone = await request(0.5)
            together = await asyncio.gather(*(request(i / 10) for i in range(6)))
            return [alone, *together]
        finally:
            await batcher.stop()

    means = asyncio.run(scenario())
    assert np.allclose(means, [0.5, *(i / 10 for i in range(6))])
    assert len(recorder.sizes) <= 3, recorder.sizes
    assert set(threads) == {threading.get_ident()}  # never in another thread
    assert recorder.sizes[0] == 1, recorder.sizes


def test_on_the_event_loop_the_images_of_one_request_share_a_forward() -> None:
    """/denoise/batch: one request (one arrival) whose images reach the batcher together are one batch."""
    recorder = Recorder()

    async def scenario() -> None:
        arrivals = Arrivals()
        batcher = DynamicBatcher(
            "test", recorder, None, max_batch_size=8, max_batch_delay_s=0.0, max_queue_size=64, timeout_s=10.0,
            arrivals=arrivals,
        )  # fmt: skip
        batcher.start()
        token = arrivals.announce()
        try:
            await asyncio.gather(*(batcher.predict(image(i / 10), token) for i in range(5)))
        finally:
            token.done()
            arrivals.leave()
            await batcher.stop()

    asyncio.run(scenario())
    assert sum(recorder.sizes) == 5 and len(recorder.sizes) <= 2, recorder.sizes
