"""The decoder's child process: a crash there is one file's 400, never the server's; memory is capped there."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from service.decode_process import BASE_BYTES, DecodeProcess, DecoderFailed


def crash() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)  # what libheif did on a fuzzed file


def allocate(nbytes: int) -> int:
    return int(np.ones(nbytes, dtype=np.uint8).sum())


def parent_pid() -> int:
    return os.getppid()


def hang() -> None:
    time.sleep(3600)  # what a decoder stuck in a loop on a hostile file does


def test_a_crash_in_the_child_is_raised_here_and_the_next_call_gets_a_new_child() -> None:
    process = DecodeProcess()
    try:
        assert process.call(parent_pid, pixels=1) == os.getpid()  # it ran in a child of this process
        with pytest.raises(DecoderFailed, match="died"):
            process.call(crash, pixels=1)
        assert process.call(allocate, 1000, pixels=1) == 1000
    finally:
        process.close()


def test_the_child_cannot_take_more_memory_than_the_pixels_allow() -> None:
    process = DecodeProcess()
    try:
        assert process.call(allocate, BASE_BYTES // 2, pixels=1) == BASE_BYTES // 2
        with pytest.raises(MemoryError):
            process.call(allocate, 2 * BASE_BYTES, pixels=1)  # a file that decodes far larger than it declared
        assert process.call(allocate, 2 * BASE_BYTES, pixels=BASE_BYTES // 16) == 2 * BASE_BYTES  # 64 B a pixel
    finally:
        process.close()


def test_a_decode_that_hangs_is_killed_and_the_next_call_gets_a_new_child() -> None:
    process = DecodeProcess()
    try:
        started = time.monotonic()
        with pytest.raises(DecoderFailed, match=r"still at it after 0\.5 s"):
            process.call(hang, pixels=1, timeout_s=0.5)
        assert time.monotonic() - started < 30  # not the hour the function asked for
        assert process.call(allocate, 1000, pixels=1) == 1000
    finally:
        process.close()


def test_a_burst_of_heic_uploads_waits_for_the_child_without_holding_the_thread_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The child decodes one HEIC at a time; a burst of them must leave anyio's threads to everything else (the
    decode and encode of every large image), not park one thread per HEIC in the queue for the child."""
    import threading

    import anyio
    import anyio.to_thread

    from service import images
    from tests.conftest import FIXTURE_ROOT

    heic = (FIXTURE_ROOT / "phone" / "coffee-turned.heic").read_bytes()
    in_flight, most = 0, 0
    counter = threading.Lock()

    def slow_child(data: bytes, max_pixels: int) -> str:  # the child's turn, made long enough to pile up behind
        nonlocal in_flight, most
        with counter:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.05)
        with counter:
            in_flight -= 1
        return "decoded"

    monkeypatch.setattr(images, "_is_heic", lambda data: True)  # also where pi-heif does not load
    monkeypatch.setattr(images, "_open_heic", slow_child)
    pool_used: list[float] = []

    async def burst() -> list[object]:
        results: list[object] = [None] * 12

        async def upload(i: int) -> None:
            results[i] = await images.open_upload(heic, 1 << 22)

        async with anyio.create_task_group() as group:
            for i in range(12):
                group.start_soon(upload, i)
            await anyio.sleep(0.1)
            pool_used.append(anyio.to_thread.current_default_thread_limiter().borrowed_tokens)
        return results

    assert anyio.run(burst) == ["decoded"] * 12  # every upload answered
    assert most <= 2 and pool_used == [0]  # two threads of their own at most, none of the shared pool
