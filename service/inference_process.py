"""Forward passes in a child process, so the model never shares an interpreter (and its GIL) with the event loop.

Why a process on a CPU: with the forward in a thread of the server, the event loop and the inference
thread take turns at one GIL, and every operator of a U-Net forward (about forty of them) waits for its
turn. Measured here, the same bfloat16 forward took 0.9–1.0 ms per image inside the server against
0.62 ms alone, and the service topped out near 0.33× the no-model floor; with the forwards in a child
process it reached 0.4–0.45× (docs/benchmarks.md). Batches cross a pipe: a batch of 32 digits is 100 KB,
a few tens of microseconds to send, against milliseconds of forward.

The child is a one-worker ``ProcessPoolExecutor`` (spawned, never forked: a fork would copy the parent's
OpenMP and event-loop threads in whatever state they were in) that holds a copy of every model. The
server's inference threads each submit one batch and wait for it, so with two of them one batch computes
while the next is already queued behind it and the child never waits for the event loop. If the child
dies (killed, or out of memory), the batch it had fails with 503 and the next batch starts a new child.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import torch
from torch import nn

from service.errors import Unavailable
from service.inference import InferenceRunner, Outcome

log = logging.getLogger(__name__)

ModelSpec = tuple[str, nn.Module, torch.dtype]  # (name, model, forward dtype), as the child rebuilds a runner

# The child's runners by model name, set once by ``_load_in_child``.
_child_runners: dict[str, InferenceRunner] = {}


def _load_in_child(specs: list[ModelSpec], threads: int) -> None:
    # Ctrl+C reaches the whole process group; the server stops the child itself, after its last batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    for name, model, dtype in specs:
        _child_runners[name] = InferenceRunner(name, model, cpu, dtype)


def _run_in_child(name: str, batch: np.ndarray) -> list[Outcome]:
    return _child_runners[name].run(list(batch))


class InferenceProcess:
    """The child process and its models; ``runner(name)`` is what a model's batcher calls."""

    def __init__(self, specs: Iterable[ModelSpec], torch_threads: int) -> None:
        self._specs = list(specs)
        self._dtypes = {name: dtype for name, _, dtype in self._specs}
        self._torch_threads = torch_threads
        self._restart_lock = threading.Lock()
        self._pool = self._start()
        self.restarts = 0

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_load_in_child,
            initargs=(self._specs, self._torch_threads),
        )

    def runner(self, name: str) -> ProcessRunner:
        return ProcessRunner(name, self._dtypes[name], self)

    def run(self, name: str, inputs: list[np.ndarray]) -> list[Outcome]:
        """Blocks the calling (inference) thread until the child answers; never raises for the child's death."""
        pool = self._pool
        try:
            return pool.submit(_run_in_child, name, np.stack(inputs)).result()
        except BrokenProcessPool:
            self._replace(pool)
            return [Unavailable("the inference process stopped and is being restarted; retry shortly")] * len(inputs)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._restart_lock:
            if self._pool is not broken:  # another inference thread saw the same death and replaced it
                return
            log.error("the inference process died; starting a new one")
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()
            self.restarts += 1

    def pid(self) -> int:
        """The child's process id (starting the child if it has not started yet)."""
        pid: int = self._pool.submit(os.getpid).result()
        return pid

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class ProcessRunner:
    """A model's runner whose forwards happen in the ``InferenceProcess``; same ``run`` as ``InferenceRunner``."""

    def __init__(self, name: str, dtype: torch.dtype, process: InferenceProcess) -> None:
        self.name = name
        self.dtype = dtype
        self.process = process

    def run(self, inputs: list[np.ndarray]) -> list[Outcome]:
        return self.process.run(self.name, inputs)
