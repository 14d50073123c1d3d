"""The dynamic batcher: many concurrent requests for one model become few forward passes.

One ``DynamicBatcher`` per model owns a bounded asyncio queue and a worker task. Whenever a forward is
free to start (``max_in_flight`` at once), the worker takes what is waiting (up to ``max_batch_size``
images and ``max_batch_pixels`` pixels, so that a batch of photo tiles stays as bounded as one of digits),
waits at most ``max_batch_delay`` for requests already on their way, groups the inputs by shape and runs
one forward per group: in an inference thread (``executor``), so the event loop stays free to read and
answer other requests while the model computes, or on the event loop itself (no executor) for a model
whose forward is shorter than the hop to a thread and back. Each request has a deadline (504 after it) and a
full queue refuses at once (503 with Retry-After).

Why wait only for requests "on their way" (``Arrivals``): a fixed delay costs every request under light
load that delay for nothing (with one client there is never anyone to wait for), while under load the
requests whose bodies are being read right now are exactly the ones worth waiting a moment for. One
still on its way ``ARRIVAL_STALE_S`` after it arrived is a slow client, and is no longer waited for.
And a request that finds the model idle, with nothing queued and nobody on the way, skips the queue and
the worker altogether (``predict``): it is a batch of one at once, as if there were no batcher. One alone in
the whole worker even after a look around gets every core (``run_alone``), and when its model is in the child
process it runs on the event loop itself, as the naive per-request server does (``alone_on_loop``): with
nothing else to serve, the loop would only wait for it, and the hop to the child and back (docs/benchmarks.md,
"Serving costs") cost about a quarter of the throughput at one connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from service import metrics
from service.errors import DeadlineExceeded, ServiceError, Unavailable
from service.inference import Outcome, Prediction

log = logging.getLogger(__name__)

RunBatch = Callable[[list[np.ndarray]], list[Outcome]]


# A request not yet queued this long after it arrived stops counting as "on its way": its body is coming
# slowly (a slow link, or a client trickling bytes on purpose), and batches that waited for it would make
# every other request pay for one slow client. Loopback and LAN uploads of a digit arrive in a millisecond
# or two; this leaves room for a slow network's round trips.
ARRIVAL_STALE_S = 0.25
# Turns of the event loop before a forward on the event loop starts (``DynamicBatcher._look_around``): two
# let a request that reached the server in the same read as this one be announced and queued.
LOOK_AROUND_TURNS = 1


class Arrivals:
    """Requests bound for a batcher that have arrived but not yet been queued (process-wide).

    The HTTP layer calls ``announce`` when a batching request starts, the token's ``done`` when it is
    queued or answered, and ``leave`` when its answer is sent; the batcher reads ``pending``, which leaves
    out announcements older than ``stale_after_s``, and ``in_service``.
    """

    def __init__(self, stale_after_s: float = ARRIVAL_STALE_S) -> None:
        self.stale_after_s = stale_after_s
        # Live tokens and when each arrived; a dict keeps insertion order, which is arrival order.
        self._live: dict[ArrivalToken, float] = {}
        self.announced = 0  # all announcements so far, for tests and diagnostics
        self.in_service = 0  # announced and not yet answered: on their way, queued, computing or encoding

    def announce(self) -> ArrivalToken:
        self.announced += 1
        self.in_service += 1
        token = ArrivalToken(self)
        self._live[token] = time.perf_counter()
        return token

    def retire(self, token: ArrivalToken) -> None:
        self._live.pop(token, None)

    def leave(self) -> None:
        self.in_service -= 1

    @property
    def pending(self) -> int:
        """Requests announced less than ``stale_after_s`` ago and not yet queued or answered."""
        live = self._live
        if live:
            cutoff = time.perf_counter() - self.stale_after_s
            while live:
                oldest = next(iter(live))
                if live[oldest] > cutoff:
                    break
                del live[oldest]  # stale: it stops counting; its done() later finds nothing to remove
        return len(live)

    def seconds_until_stale(self) -> float:
        """How long until every request counted in ``pending`` has gone stale (0 when none is pending)."""
        if not self._live:
            return 0.0
        newest = next(reversed(self._live.values()))
        return max(0.0, newest + self.stale_after_s - time.perf_counter())


class ArrivalToken:
    """One announced request; ``done`` is idempotent so both the route and the middleware may call it."""

    __slots__ = ("_arrivals",)

    def __init__(self, arrivals: Arrivals | None) -> None:
        self._arrivals = arrivals

    def done(self) -> None:
        if self._arrivals is not None:
            self._arrivals.retire(self)
            self._arrivals = None


@dataclass(eq=False)
class _Pending:
    array: np.ndarray
    future: asyncio.Future[Prediction]
    enqueued: float = field(default_factory=time.perf_counter)


def _expire(future: asyncio.Future[Prediction], timeout_s: float) -> None:
    if not future.done():
        future.set_exception(
            DeadlineExceeded(
                f"no answer within the {timeout_s:g} s deadline (DAE_REQUEST_TIMEOUT_S): the service "
                "is overloaded or the image is too large; retry later or send a smaller image"
            )
        )


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class DynamicBatcher:
    """Queue + worker for one model; ``start`` inside the event loop, ``stop`` on shutdown."""

    def __init__(
        self,
        name: str,
        run_batch: RunBatch,
        executor: Executor | None,
        *,
        max_batch_size: int,
        max_batch_pixels: int = 1 << 62,
        max_batch_delay_s: float,
        max_queue_size: int,
        timeout_s: float,
        arrivals: Arrivals | None = None,
        max_in_flight: int = 1,
        run_alone: RunBatch | None = None,
        alone_on_loop: bool = False,
    ) -> None:
        self.name = name
        self._run_batch = run_batch
        self._executor = executor  # None: forwards run on the event loop, after a look around (``_look_around``)
        # What computes a request alone in the worker: run_alone (every core) when given; without it, run_batch
        # on the event loop, and no alone path at all with an executor. And whether it runs on the event loop.
        self._run_alone = run_alone or (run_batch if executor is None else None)
        self._alone_on_loop = executor is None or alone_on_loop
        self.max_batch_size = max_batch_size
        self.max_batch_pixels = max_batch_pixels
        self.max_batch_delay_s = max_batch_delay_s
        self.timeout_s = timeout_s
        self._arrivals = arrivals or Arrivals()
        self.max_queue_size = max_queue_size
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()  # bounded by ``queue_size``, which counts _held
        self._task: asyncio.Task[None] | None = None
        # Batches computing at once: one per inference thread, so a batch is formed only when a thread is
        # free to take it, and what arrives meanwhile waits in the queue to join the next.
        self.max_in_flight = 1 if executor is None else max_in_flight
        self._slots = asyncio.Semaphore(self.max_in_flight)
        self._in_flight: set[asyncio.Task[None]] = set()
        # Taken off the queue by the worker, waiting for a forward to be free (or for the next batch, when it
        # did not fit in the last one).
        self._held: _Pending | None = None
        self._gathering = False  # the worker holds requests it is forming into a batch
        self._looking = 0  # requests looking around before computing alone (see ``predict``)
        self._waiter: asyncio.Future[None] | None = None  # set while the worker waits for arrivals
        self._wanted = 0  # how many more requests would fill the batch the worker is gathering
        self._metrics = metrics.BatcherMetrics(name)

    @property
    def queue_size(self) -> int:
        """Requests waiting for a forward: those queued, and the one the worker holds until a forward is free."""
        return self._queue.qsize() + (self._held is not None)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Stop the worker; batches computing and requests still queued are answered 503."""
        tasks = [task for task in (self._task, *self._in_flight) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(Unavailable("the service is shutting down; retry on another instance"))
        self._metrics.queue_depth.set(0)

    def enqueue(self, array: np.ndarray, arrival: ArrivalToken | None = None) -> asyncio.Future[Prediction]:
        """Queue one H×W image; the future resolves to its ``Prediction`` or a ``ServiceError``.

        Synchronous, so a caller can queue several images before the worker looks (they then share a
        batch); raises ``Unavailable`` (503) at once when the queue is full.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Prediction] = loop.create_future()
        if arrival is not None:
            arrival.done()
        if self.queue_size >= self.max_queue_size:
            self._metrics.rejected_full.inc()
            raise Unavailable(
                f"model {self.name!r} has {self.max_queue_size} requests waiting (DAE_MAX_QUEUE_SIZE); retry shortly"
            )
        self._queue.put_nowait(_Pending(array, future))
        self._set_deadline(future)
        queued = self._queue.qsize()
        self._metrics.queue_depth.set(self.queue_size)
        if self._waiter is not None and (queued >= self._wanted or self._arrivals.pending <= 0):
            _wake(self._waiter)
        return future

    async def predict(self, array: np.ndarray, arrival: ArrivalToken | None = None) -> Prediction:
        """One image's prediction: at once when the model is idle, else through the queue with the others."""
        if arrival is not None:
            arrival.done()
        alone = self._run_alone is not None and await self._alone_after_look_around()
        if not alone and (self._executor is None or not self._idle()):
            return await self.enqueue(array)
        await self._slots.acquire()  # free (checked just now): returns without waiting
        pending = _Pending(array, asyncio.get_running_loop().create_future())
        if not (alone and self._alone_on_loop):  # a thread or child that never answers must not hold it for ever
            self._set_deadline(pending.future)
        await self._run([pending], alone)
        return await pending.future

    async def _alone_after_look_around(self) -> bool:
        """Whether the model is idle and the request alone in the worker even after a look around (others
        looking around at the same time, the images of one request, are company)."""
        if not self._alone():
            return False
        self._looking += 1
        try:
            await self._look_around()
        finally:
            self._looking -= 1
        return self._alone()

    def _alone(self) -> bool:
        return self._idle() and self._looking == 0 and self._arrivals.in_service <= 1

    @staticmethod
    async def _look_around() -> None:
        """Let the event loop turn a few times: requests that reached the server with this one get as far as
        the batcher (or at least their announcement) meanwhile, and can share the forward that follows.

        Forwards on the event loop need this: nothing else would ever suspend a request between its
        arrival and its forward, so no other request could join it."""
        for _ in range(LOOK_AROUND_TURNS):
            await asyncio.sleep(0)

    def _idle(self) -> bool:
        """Nothing queued or being gathered, a forward free to start, and no other request on its way."""
        return (
            self._queue.empty()
            and self._held is None
            and not self._gathering
            and not self._slots.locked()
            and self._arrivals.pending <= 0
        )

    def _set_deadline(self, future: asyncio.Future[Prediction]) -> None:
        timer = asyncio.get_running_loop().call_later(self.timeout_s, _expire, future, self.timeout_s)
        future.add_done_callback(lambda _: timer.cancel())

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._held is None:  # else it is what did not fit in the last batch: it starts this one
                self._held = await self._queue.get()
            first = self._held
            self._gathering = True
            try:
                await self._slots.acquire()
                self._held = None
                try:
                    if self._executor is None:
                        await self._look_around()
                    batch = await self._gather(first)
                except BaseException:
                    self._slots.release()
                    raise
            except BaseException:
                for held in (first, self._held):
                    if held is not None and not held.future.done():  # cancelled (shutdown) while holding it
                        held.future.set_exception(Unavailable("the service is shutting down; retry shortly"))
                raise
            finally:
                self._gathering = False
            live = [pending for pending in batch if not pending.future.done()]  # drop the expired
            self._metrics.queue_depth.set(self.queue_size)
            task = loop.create_task(self._run(live))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _run(self, batch: list[_Pending], alone: bool = False) -> None:
        """Compute one batch (its slot already taken; ``alone``: a request alone in the worker), free the slot,
        answer every request in it."""
        try:
            try:
                answered = await self._compute(batch, alone)
            finally:
                # Free the thread before answering: the worker's wake-up is then queued ahead of the
                # requests' continuations (encode, send), so the next forward starts first and overlaps
                # their encoding instead of waiting for it.
                self._slots.release()
            for group, outcomes in answered:
                self._metrics.batch_size.observe(len(group))  # images per forward pass
                self._settle(group, outcomes)
        except asyncio.CancelledError:
            self._settle(batch, [Unavailable("the service is shutting down; retry shortly")] * len(batch))
            raise
        except Exception as exc:  # keep serving whatever went wrong with this one batch
            log.exception("batcher %s: a batch of %d failed", self.name, len(batch))
            self._settle(batch, [ServiceError(f"internal error while batching: {exc}")] * len(batch))

    async def _gather(self, first: _Pending) -> list[_Pending]:
        batch = [first]
        if not self._take_waiting(batch) or self.max_batch_delay_s <= 0 or self._arrivals.pending <= 0:
            return batch
        # Requests are on their way: sleep until enough are queued to fill the batch, the last of them
        # is queued, or the delay is up; ``enqueue`` wakes us, once, rather than once per request.
        loop = asyncio.get_running_loop()
        self._wanted = self.max_batch_size - len(batch)
        self._waiter = loop.create_future()
        # No longer than the delay, nor than until the requests awaited would go stale.
        wait_s = min(self.max_batch_delay_s, self._arrivals.seconds_until_stale())
        timer = loop.call_later(wait_s, _wake, self._waiter)
        try:
            await self._waiter
        finally:
            timer.cancel()
            self._waiter = None
        self._take_waiting(batch)
        return batch

    def _take_waiting(self, batch: list[_Pending]) -> bool:
        """Add what is queued to ``batch`` while it fits; whether more would still fit."""
        pixels = sum(pending.array.size for pending in batch)
        while len(batch) < self.max_batch_size and not self._queue.empty():
            pending = self._queue.get_nowait()
            if pixels + pending.array.size > self.max_batch_pixels:
                self._held = pending  # the first of the next batch
                return False
            batch.append(pending)
            pixels += pending.array.size
        return len(batch) < self.max_batch_size

    async def _compute(self, batch: list[_Pending], alone: bool = False) -> list[tuple[list[_Pending], list[Outcome]]]:
        """One forward per shape in the batch, in an inference thread or here on the event loop; (group, its
        outcomes) pairs."""
        if not batch:
            return []
        groups: dict[tuple[int, ...], list[_Pending]] = {}
        for pending in batch:
            groups.setdefault(pending.array.shape, []).append(pending)
        started = time.perf_counter()
        for pending in batch:
            self._metrics.queue_wait.observe(started - pending.enqueued)
        run = self._run_alone if alone and self._run_alone is not None else self._run_batch
        if self._executor is None or (alone and self._alone_on_loop):
            outcomes = self._run_groups(run, list(groups.values()))
        else:
            loop = asyncio.get_running_loop()
            outcomes = await loop.run_in_executor(self._executor, self._run_groups, run, list(groups.values()))
        self._metrics.inference_seconds.observe(time.perf_counter() - started)
        return list(zip(groups.values(), outcomes, strict=True))

    @staticmethod
    def _run_groups(run: RunBatch, groups: list[list[_Pending]]) -> list[list[Outcome]]:
        """One forward per shape."""
        return [run([pending.array for pending in group]) for group in groups]

    @staticmethod
    def _settle(batch: list[_Pending], outcomes: list[Outcome]) -> None:
        for pending, outcome in zip(batch, outcomes, strict=True):
            if pending.future.done():  # expired while it computed
                continue
            if isinstance(outcome, Exception):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)
