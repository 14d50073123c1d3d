"""Fixtures for the service tests: the real app over the real shipped checkpoints, in process or on a socket.

``AppClient`` drives the app through httpx's ASGI transport with its lifespan running (what a server
does), from ordinary synchronous tests. ``LiveServer`` runs the same app under uvicorn on 127.0.0.1 at
a free port, for the tests that need real connections (batching across clients, overload, the browser).
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import numpy as np
import png
import pytest
import tifffile
import torch
import uvicorn
from fastapi import FastAPI
from PIL import Image

from models.checkpoint import find_checkpoints
from service.app import create_app
from service.inference import InferenceRunner
from service.registry import ModelStore
from service.settings import ENV_PREFIX, Settings
from tests.conftest import CHECKPOINT_DIR

READY_TIMEOUT_S = 60.0
FIXED_SIZE_MODEL = "mlp-gaussian"  # the reference model, shipped first
# Forwards in inference threads of this process, so that a test can wrap ``store.denoisers[...].runner.model``
# (hold a forward open, slow it, make it raise); the runner code is the same one the child process runs.
MODELS_IN_PROCESS = {"inference_backend": "thread"}


def runner_in_process(store: ModelStore, name: str) -> InferenceRunner:
    """The runner of model ``name`` in an app started with ``MODELS_IN_PROCESS``, whose model a test may wrap."""
    runner = store.denoisers[name].runner
    assert isinstance(runner, InferenceRunner), "start the app with **MODELS_IN_PROCESS to wrap its models"
    return runner


def shipped_models() -> list[str]:
    """Names of the checkpoints shipped right now (the set grows as models are trained)."""
    return [path.stem for path in find_checkpoints(CHECKPOINT_DIR)]


def encoded(image: Image.Image, format: str = "PNG", **options: Any) -> bytes:
    """``image`` saved by Pillow as ``format``, with its ``options``."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def png_bytes(pixels: np.ndarray, **save: Any) -> bytes:
    return encoded(Image.fromarray(pixels), "PNG", **save)


def wide_png(samples: np.ndarray) -> bytes:
    """H×W×C uint16 samples (grey and alpha, RGB, RGBA) → a 16-bit PNG, which Pillow cannot write."""
    height, width, channels = samples.shape
    buffer = io.BytesIO()
    png.Writer(width, height, greyscale=channels < 3, alpha=channels in (2, 4), bitdepth=16).write(
        buffer, samples.reshape(height, -1)
    )
    return buffer.getvalue()


def wide_tiff(samples: np.ndarray, **options: Any) -> bytes:
    """Samples → a TIFF written by tifffile (16-bit colour, which Pillow cannot write), with its ``options``."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, samples, **options)
    return buffer.getvalue()


def png_samples(data: bytes) -> tuple[int, np.ndarray]:
    """A PNG's bit depth and its H×W×C samples, read by pypng (Pillow narrows 16-bit colour to 8 bits)."""
    width, height, rows, info = png.Reader(bytes=data).read()
    return info["bitdepth"], np.vstack([np.asarray(row) for row in rows]).reshape(height, width, -1)


def decode_png(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return np.asarray(image)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Debian's chromium through playwright (never skipped)")


@pytest.fixture(scope="session", autouse=True)
def _no_dae_environment() -> Iterator[None]:
    """The shell's DAE_ variables (an API key, another checkpoint folder...) must not leak into the tests."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
            patch.delenv(name)
        yield


def upload(data: bytes, name: str = "digit.png") -> dict[str, Any]:
    return {"file": (name, data, "image/png")}


def denoise(client: AppClient, data: bytes, **fields: Any) -> dict[str, Any]:
    response = client.post("/denoise", files=upload(data), data={k: str(v) for k, v in fields.items()})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def settings_for(**overrides: Any) -> Settings:
    """Settings over the shipped checkpoints, small batches, one forward at a time, plus ``overrides``.

    One forward at a time keeps "which request is in the forward and which are queued" exact for the
    tests that hold a forward open; side-by-side forwards have their own test in test_batcher.py.
    """
    fields: dict[str, Any] = {
        "checkpoint_dir": CHECKPOINT_DIR,
        "device": "cpu",  # the same on a machine with CUDA; the cuda tests ask for it by name
        "max_batch_size": 8,
        "inference_threads": 1,
        "torch_threads": 1,
        **overrides,
    }
    return Settings(**fields)


class AppClient:
    """A synchronous client for the app, with its lifespan run the way a server runs it."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        self._lifespan: AbstractAsyncContextManager[Any] = app.router.lifespan_context(app)
        try:
            self._portal.call(self._lifespan.__aenter__)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        transport = httpx.ASGITransport(app=app)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://service.test", timeout=30.0)

    @property
    def store(self) -> ModelStore:
        store: ModelStore = self.app.state.store
        return store

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._portal.call(partial(self._client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function`` (sync or async) in the app's event loop thread."""
        return self._portal.call(function, *args)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while self.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the app did not become ready"
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self._portal.call(self._client.aclose)
            self._portal.call(self._lifespan.__aexit__, None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)


class LiveServer:
    """The app under uvicorn in a background thread, listening on 127.0.0.1 at a free port."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        settings: Settings = app.state.settings
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
            timeout_keep_alive=settings.keep_alive_s,  # as dae-serve runs it
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    @property
    def store(self) -> ModelStore:
        store: ModelStore = self.app.state.store
        return store

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert self._thread.is_alive(), "uvicorn stopped during start-up"
            assert time.monotonic() < deadline, "the server did not become ready"
            try:
                if httpx.get(self.url + "/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._socket.close()


@pytest.fixture(scope="session")
def digits(mnist_test_images: torch.Tensor) -> list[bytes]:
    """Sixteen real MNIST test digits as 28×28 grayscale PNGs."""
    return [png_bytes(image.numpy()) for image in mnist_test_images[:16]]


@pytest.fixture(scope="session")
def digit(digits: list[bytes]) -> bytes:
    return digits[0]


@pytest.fixture(scope="session")
def client() -> Iterator[AppClient]:
    """The app with default settings over every shipped checkpoint, shared by the read-only tests."""
    app_client = AppClient(create_app(settings_for()))
    try:
        app_client.wait_ready()
        yield app_client
    finally:
        app_client.close()


@pytest.fixture
def make_client() -> Iterator[Callable[..., AppClient]]:
    """Build an app with particular settings; closed after the test."""
    made: list[AppClient] = []

    def make(*, wait: bool = True, **overrides: Any) -> AppClient:
        app_client = AppClient(create_app(settings_for(**overrides)))
        made.append(app_client)
        if wait:
            app_client.wait_ready()
        return app_client

    yield make
    for app_client in made:
        app_client.close()


@contextmanager
def serving(**overrides: Any) -> Iterator[LiveServer]:
    """A live server with ``settings_for(**overrides)``, ready, for the ``with`` block; a module's fixture
    shares one this way where its tests only read from it (each start loads and warms every model)."""
    server = LiveServer(create_app(settings_for(**overrides)))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_server() -> Iterator[Callable[..., LiveServer]]:
    """Start a live server with particular settings; stopped after the test."""
    with ExitStack() as servers:
        yield lambda **overrides: servers.enter_context(serving(**overrides))


@pytest.fixture
def checkpoint_copy(tmp_path: Path) -> Path:
    """A copy of the shipped checkpoints that a test may damage."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for card in find_checkpoints(CHECKPOINT_DIR):
        for path in (card, card.with_suffix(".safetensors")):
            (folder / path.name).write_bytes(path.read_bytes())
    return folder
