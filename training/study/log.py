"""Progress lines with the elapsed time, so a long run shows where it is."""

from __future__ import annotations

import time
from collections.abc import Callable

LogFn = Callable[[str], None]


class ProgressLog:
    """Prints ``[  12.3 s] message`` lines, timed from the start of the run."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def __call__(self, message: str) -> None:
        print(f"[{self.elapsed():7.1f} s] {message}", flush=True)
