"""The small costs the serving path is designed around, each measured alone: decode, encode, hops, forwards.

The service's docstrings explain their choices with these (what runs on the event loop, what goes to a
thread or the child process, why the form is parsed and the PNG written by hand); the figures live
here, in docs/benchmarks.md, where anyone can rerun them:

    python -m bench.costs              # prints the table and writes it to docs/benchmarks.md
    python -m bench.costs --no-write

Each figure is the median over ``--repeats`` rounds of the mean time per call in a timed loop, on one
torch thread, with nothing else running.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import multiprocessing
import statistics
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Annotated

import httpx
import numpy as np
import torch
from fastapi import FastAPI, Form, Request
from PIL import Image

from bench.common import device_description, publish
from models.architectures import create_model
from service.encoding import encode_png, quantize
from service.forms import read_form
from service.images import load_pixels, open_checked
from service.schemas import DenoiseForm

HEADING = "Serving costs"


def per_call_us(function: Callable[[], object], calls: int, repeats: int) -> float:
    """Median over ``repeats`` of the mean microseconds per call of ``calls`` calls."""
    function()  # warm: first-call set-up is not what the service pays per request
    rounds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            function()
        rounds.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(rounds)


def digit_png() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _echo(connection: Connection) -> None:
    while (message := connection.recv()) is not None:
        connection.send(message)


def pipe_round_trip_us(calls: int, repeats: int) -> float:
    """A 28×28 float32 batch of one to a spawned child process and back (what the process backend adds)."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_echo, args=(theirs,), daemon=True)
    child.start()
    batch = np.zeros((1, 28, 28), dtype=np.float32)

    def round_trip() -> None:
        ours.send(("model", batch))
        ours.recv()

    try:
        return per_call_us(round_trip, calls, repeats)
    finally:
        ours.send(None)
        child.join(timeout=10)


def thread_hop_us(calls: int, repeats: int) -> float:
    """An event loop handing a no-op to a worker thread and getting the answer back (what the thread backend adds)."""

    async def hops() -> float:
        loop = asyncio.get_running_loop()
        rounds = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(calls):
                await loop.run_in_executor(None, int)
            rounds.append((time.perf_counter() - started) / calls * 1e6)
        return statistics.median(rounds)

    return asyncio.run(hops())


def form_parsing_us(calls: int, repeats: int) -> tuple[float, float]:
    """Per request through the ASGI app in process: FastAPI's ``Annotated[Model, Form()]`` against ``read_form``.

    Both apps answer the same multipart request with an empty 200; the difference is the parsing."""
    by_fastapi, by_hand = FastAPI(), FastAPI()

    @by_fastapi.post("/denoise")
    async def parsed_by_fastapi(form: Annotated[DenoiseForm, Form()]) -> None:
        return None

    @by_hand.post("/denoise")
    async def parsed_by_hand(request: Request) -> None:
        await read_form(request, DenoiseForm, max_files=1)

    files = {"file": ("d.png", digit_png(), "image/png")}
    fields = {"model": "mlp-gaussian", "noise": "gaussian", "level": "0.3", "seed": "1"}

    async def timed(app: FastAPI) -> float:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
            rounds = []
            for _ in range(repeats):
                started = time.perf_counter()
                for _ in range(calls):
                    response = await client.post("/denoise", files=files, data=fields)
                    assert response.status_code == 200, response.text
                rounds.append((time.perf_counter() - started) / calls * 1e6)
            return statistics.median(rounds)

    return asyncio.run(timed(by_fastapi)), asyncio.run(timed(by_hand))


def forward_us(model: torch.nn.Module, batch: int, dtype: torch.dtype, calls: int, repeats: int) -> float:
    """One forward of ``batch`` 28×28 digits, as the service runs it (inference mode, autocast for bf16)."""
    x = torch.rand(batch, 1, 28, 28)
    if any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

    def forward() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            model(x)

    return per_call_us(forward, calls, repeats)


def measure(repeats: int) -> list[tuple[str, float, str]]:
    torch.set_num_threads(1)
    png = digit_png()
    pixels = load_pixels(open_checked(png, 1 << 22))
    mlp, unet = create_model("mlp").eval(), create_model("conv").eval()
    fastapi_form, hand_form = form_parsing_us(300, repeats)

    def decode() -> None:
        load_pixels(open_checked(png, 1 << 22))

    def pillow_encode() -> None:
        Image.fromarray(quantize(pixels)).save(io.BytesIO(), format="PNG", compress_level=1)

    def forward(model: torch.nn.Module, batch: int, dtype: torch.dtype = torch.float32) -> float:
        return forward_us(model, batch, dtype, max(20, 2000 // batch), repeats) / batch

    return [
        ("decode a 28×28 PNG (open, check, to float)", per_call_us(decode, 2000, repeats), ""),
        ("encode a 28×28 PNG (service.encoding.write_png)", per_call_us(lambda: encode_png(pixels), 5000, repeats), ""),
        ("encode a 28×28 PNG with Pillow", per_call_us(pillow_encode, 2000, repeats), "why write_png is hand-written"),
        ("event loop → thread → event loop (no work)", thread_hop_us(2000, repeats), "per batch, in threads"),
        ("a digit to a child process and back", pipe_round_trip_us(2000, repeats), "per batch, in the child"),
        ("a request through FastAPI's Form(model) parsing", fastapi_form, "in-process ASGI, empty answer"),
        ("the same request through service.forms.read_form", hand_form, "why the routes parse their form by hand"),
        ("MLP forward, batch 1 (float32)", forward(mlp, 1), "a few hops: the MLPs run on the event loop (\"Serving\")"),
        ("MLP forward, batch 32 (float32), per image", forward(mlp, 32), ""),
        ("U-Net forward, batch 1 (float32)", forward(unet, 1), ""),
        ("U-Net forward, batch 32 (float32), per image", forward(unet, 32), ""),
        ("U-Net forward, batch 32 (bf16), per image", forward(unet, 32, torch.bfloat16), "auto: native bf16 only"),
    ]  # fmt: skip


def table(rows: list[tuple[str, float, str]]) -> str:
    lines = ["| what | µs | why it matters |", "| --- | ---: | --- |"]
    lines += [f"| {what} | {us:,.1f} | {why} |" for what, us, why in rows]
    return "\n".join(lines)


def cost_arguments(description: str, argv: list[str] | None) -> argparse.Namespace:
    """The flags of a cost table's benchmark: ``--repeats`` (the median kept) and ``--no-write``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=5, help="rounds per figure, the median kept (default 5)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = cost_arguments(__doc__.splitlines()[0], argv)
    rows = measure(args.repeats)
    body = "\n".join(
        [
            "Each cost alone, one torch thread, median of "
            f"{args.repeats} rounds. The service's docstrings refer to these figures.",
            "",
            "- Command: `python -m bench.costs`",
            f"- Device: {device_description('cpu')}",
            f"- Measured: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
            "",
            table(rows),
        ]
    )
    publish(HEADING, body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
