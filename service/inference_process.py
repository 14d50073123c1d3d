"""Forward passes in a child process, so the model never shares an interpreter (and its GIL) with the event loop.

Why a process on a CPU: with the forward in a thread of the server, the event loop and the inference
thread take turns at one GIL, and every operator of a U-Net forward (about forty of them) waits for its
turn; the serving benchmark's ``service`` and ``service, threads`` rows compare the two
(docs/benchmarks.md). Batches cross a pipe: a batch of 32 digits is 100 KB, and a round trip costs far
less than the forward it carries ("Serving costs" there). What crosses the pipe is pickled
(arrays, outcomes), but only this server and the child it spawned ever write to it: a client's bytes
are decoded to an array before they get here.

The child is spawned, never forked (a fork would copy the parent's OpenMP and event-loop threads in
whatever state they were in), and holds a copy of every model. The server's inference threads each send
one batch down the pipe and wait for the answer, so with two of them one batch computes while the next
waits ready behind it. If the child dies (killed, or out of memory) or a batch outlasts the request
deadline (a stuck child), the batch it had fails with 503 and a new child takes over at once. A request
alone in the worker never comes here: the server computes it on its event loop, with its own copy of the
model (``DynamicBatcher``'s ``run_alone``), since the loop would only wait for the child's answer.
"""

from __future__ import annotations

import contextlib
import logging
import logging.config
import multiprocessing
import signal
import threading
from collections.abc import Iterable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np
import torch
from torch import nn

from service.errors import InferenceFailed, Unavailable
from service.inference import InferenceRunner, Outcome

log = logging.getLogger(__name__)

ModelSpec = tuple[str, nn.Module, torch.dtype]  # (name, model, forward dtype), as the child rebuilds a runner
READY = "ready"  # the child's first message, once its models are loaded
# How long a new child may take to import torch and build its models (seconds here) before it counts as stuck.
CHILD_START_TIMEOUT_S = 120.0


def _serve_in_child(
    connection: Connection, specs: list[ModelSpec], threads: int, logging_config: dict[str, Any] | None
) -> None:
    """The child's whole life: build a runner per model, then answer batches until told to stop."""
    # Ctrl+C reaches the whole process group; the server stops the child itself, after its last batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if logging_config:  # the server's format and level, so the child's lines read like the server's
        logging.config.dictConfig(logging_config)
    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    runners = {name: InferenceRunner(name, model, cpu, dtype) for name, model, dtype in specs}
    connection.send(READY)
    while True:
        try:
            message = connection.recv()
        except EOFError:  # the server is gone
            return
        if message is None:
            return
        name, batch = message
        try:
            outcomes = runners[name].run(list(batch))
        except Exception as exc:  # runners answer a model's faults themselves; this is anything else
            outcomes = [InferenceFailed(f"the inference process failed on model {name!r}: {exc}")] * len(batch)
        connection.send(outcomes)


class InferenceProcess:
    """The child process and its models; a ``ProcessRunner`` per model is what that model's batcher calls.

    Why not ``ProcessPoolExecutor``: it hands every call through a manager thread and a queue feeder
    thread, two more thread wake-ups per batch on top of the round trip. A pipe that the inference thread
    writes and reads itself is that one round trip.
    """

    def __init__(
        self,
        specs: Iterable[ModelSpec],
        torch_threads: int,
        batch_timeout_s: float,
        logging_config: dict[str, Any] | None = None,
    ) -> None:
        self._specs = list(specs)
        self._torch_threads = torch_threads
        self._batch_timeout_s = batch_timeout_s
        self._logging_config = logging_config
        # One batch on the pipe at a time: the next inference thread waits here with its batch ready.
        self._lock = threading.Lock()
        self._connection: Connection  # set by start()
        self._process: BaseProcess
        self._spawned = False
        self._started = False  # whether the current child has said READY
        self.restarts = 0

    def start(self) -> None:
        """Spawn the child; it loads its models while the server starts, and says READY before its first batch."""
        if not self._spawned:
            self._connection, self._process = self._start()
            self._spawned = True

    def _start(self) -> tuple[Connection, BaseProcess]:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_serve_in_child,
            args=(theirs, self._specs, self._torch_threads, self._logging_config),
            name="dae-inference",
            daemon=True,  # never outlives the server, however the server ends
        )
        process.start()
        theirs.close()  # the child's end: with it closed here, the child's death reads as end-of-file
        return ours, process

    @property
    def pid(self) -> int:
        pid = self._process.pid
        assert pid is not None, "the child has started"  # _start starts it before anyone can ask
        return pid

    def run(self, name: str, inputs: list[np.ndarray]) -> list[Outcome]:
        """Blocks the calling (inference) thread until the child answers; never raises for the child's death."""
        with self._lock:
            try:
                if not self._started and not self._wait_until_ready():
                    self._restart(f"did not start within {CHILD_START_TIMEOUT_S:g} s")
                else:
                    self._connection.send((name, np.stack(inputs)))
                    # A batch that takes longer than a request's whole deadline has a stuck child (every
                    # request in it has had its 504 already): replace it rather than wait on it for ever.
                    if self._connection.poll(self._batch_timeout_s):
                        outcomes: list[Outcome] = self._connection.recv()
                        return outcomes
                    self._restart(f"gave no answer in {self._batch_timeout_s:g} s")
            except (EOFError, OSError):
                self._restart("died")
        return [Unavailable("the inference process stopped and was restarted; retry")] * len(inputs)

    def _wait_until_ready(self) -> bool:
        """Wait for a new child's READY (importing torch takes seconds, no batch deadline applies to it)."""
        self._started = self._connection.poll(CHILD_START_TIMEOUT_S) and self._connection.recv() == READY
        return self._started

    def _restart(self, why: str) -> None:
        log.error("the inference process (pid %s) %s; starting a new one", self._process.pid, why)
        self._process.kill()
        self._process.join()
        self._connection.close()
        self._connection, self._process = self._start()
        self._started = False
        self.restarts += 1

    def shutdown(self) -> None:
        if not self._spawned:
            return
        with self._lock:
            with contextlib.suppress(OSError):  # a child already gone needs no telling
                self._connection.send(None)
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._connection.close()


class ProcessRunner:
    """A model's runner whose forwards happen in the ``InferenceProcess``; same ``run`` as ``InferenceRunner``."""

    def __init__(self, name: str, process: InferenceProcess) -> None:
        self.name = name
        self.process = process

    def run(self, inputs: list[np.ndarray]) -> list[Outcome]:
        return self.process.run(self.name, inputs)
