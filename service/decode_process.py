"""Decoding in a child process, for the decoders whose crash on a hostile file must not take the server down.

HEIC's decoders (libheif and libde265: C, a container format and a video codec) crashed the process on 15
of 20,000 random mutations of a valid phone photo, in the pi-heif build the service uses (a newer libheif
crashed on none of them; the next bug is one release away). In the server a segmentation fault kills the
worker and every request in it; in a child it is one file's 400. A CMYK upload's colour profile is read here
too, by littlecms (``service.cmyk``): there a failure costs the profile, and the formula converts the picture.

The child is spawned (never forked: a fork would copy the server's threads in whatever state they were in),
on the first such upload; it imports no torch. It decodes one file at a time, each under an address-space
limit sized from the pixel limit, since a file may decode to another size than its header says. One file at
a time also means a death is that file's alone: the files of other clients wait their turn outside the child,
and the next one starts a new child. A decode still running after ``DECODE_TIMEOUT_S`` is killed the same
way: a file that hangs its decoder would otherwise hold up every HEIC after it.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

T = TypeVar("T")

# The child's memory for one decode: what it holds already, plus this much per declared pixel (the decoder's
# frame, the RGB(A) bytes, the float planes and their copies: about 40 bytes a pixel), plus this much slack.
BYTES_PER_PIXEL = 64
BASE_BYTES = 256 * 1024 * 1024
# Far past the slowest honest decode (a 12-megapixel HEIC: 1.8 s on the 2-core EPYC).
DECODE_TIMEOUT_S = 30.0


class DecoderFailed(Exception):
    """The child died decoding the file, or took too long (``failure``: "died" or "hung"); the message says which."""

    def __init__(self, message: str, failure: str) -> None:
        super().__init__(message)
        self.failure = failure


def _kill_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Kill the pool's process: ``kill_workers`` where Python has it (3.14), else its processes one by one."""
    kill = getattr(pool, "kill_workers", None)
    if kill is not None:
        kill()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()


def _limit_memory(budget: int) -> None:
    """Cap the child's address space at what it has now plus ``budget`` bytes (Linux; elsewhere, no cap)."""
    try:
        import resource

        with open("/proc/self/statm") as statm:
            current = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = current + budget if hard == resource.RLIM_INFINITY else min(current + budget, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, ValueError):
        pass


def _call_limited(budget: int, function: Callable[..., T], *args: object) -> T:
    _limit_memory(budget)
    return function(*args)


class DecodeProcess:
    """One child process that runs decode functions (module-level, so they pickle by name), one at a time."""

    def __init__(self) -> None:
        self._turn = threading.Lock()  # held for a whole call: the child decodes one file at a time
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def call(
        self,
        function: Callable[..., T],
        *args: object,
        pixels: int,
        timeout_s: float = DECODE_TIMEOUT_S,
        counted_as: str | None = None,
    ) -> T:
        """``function(*args)`` in the child, under a memory cap for ``pixels``; what it raises is raised here,
        ``DecoderFailed`` if the child dies or is still at it after ``timeout_s`` (it is killed then: a file
        that hangs its decoder must not hold up every later one), counted in ``dae_decoder_failures_total``
        under the format ``counted_as`` where one is given. Blocks the calling thread: call it from a worker
        thread."""
        with self._turn:
            if self._pool is None:
                self._pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            pool = self._pool
            future = pool.submit(_call_limited, BASE_BYTES + BYTES_PER_PIXEL * pixels, function, *args)
            try:
                return future.result(timeout=timeout_s)
            except BrokenProcessPool:
                failure = DecoderFailed("the decoder died on it", "died")
            except concurrent.futures.TimeoutError:
                failure = DecoderFailed(f"the decoder was still at it after {timeout_s:g} s", "hung")
                _kill_workers(pool)
            self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
        if counted_as is not None:
            from service import metrics  # here, not at the top: the child imports this module, and must not count

            metrics.DECODER_FAILURES.labels(counted_as, failure.failure).inc()
        raise failure

    def close(self) -> None:
        """Stop the child, if one was started (the next call starts another)."""
        with self._turn:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


DECODE_PROCESS = DecodeProcess()
