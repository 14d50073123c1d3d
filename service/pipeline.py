"""The serving path without HTTP: decode → (resize, corrupt) → batch → predict → measure → encode.

Where each step runs: decoding, corrupting and encoding an image of at most ``INLINE_MAX_PIXELS``
happens on the event loop; anything larger goes to a worker thread. Measured on this project's 2-core
machine, a 28×28 PNG decodes in about 60 µs and encodes in about 15 µs, while a hop to the thread pool
and back costs 100-200 µs of the same event loop plus a GIL hand-over: for the images this service
mostly sees the hop would cost more than the work, and for large ones the work (milliseconds) would
stall every other request.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio.to_thread
import numpy as np
import torch
from PIL import Image

from models.corruptions import DEFAULT_LEVELS, corrupt, make_generator
from models.metrics import psnr_db_from_mse
from service.batcher import ArrivalToken
from service.errors import ServiceError
from service.images import encode_png, load_pixels, open_checked, resize
from service.inference import Prediction
from service.registry import LoadedModel
from service.schemas import MAX_SEED, DenoiseResponse, NoiseInfo, NoiseName

INLINE_MAX_PIXELS = 64 * 64
T = TypeVar("T")


@dataclass(frozen=True)
class NoiseSpec:
    """A corruption fully pinned down: the same spec on the same image gives the same bytes."""

    type: NoiseName
    level: float
    seed: int

    @classmethod
    def choose(cls, noise: NoiseName, level: float | None, seed: int | None) -> NoiseSpec:
        """Fill in the default level and a random (reported) seed."""
        return cls(
            noise,
            DEFAULT_LEVELS[noise] if level is None else level,
            random.randrange(2**31) if seed is None else seed,
        )

    def info(self) -> NoiseInfo:
        return NoiseInfo(type=self.type, level=self.level, seed=self.seed)


async def run_sized(pixels: int, function: Callable[..., T], *args: object) -> T:
    """Run ``function`` here if the image is small, else in a worker thread (see the module's docstring)."""
    if pixels <= INLINE_MAX_PIXELS:
        return function(*args)
    return await anyio.to_thread.run_sync(function, *args)


def apply_noise(clean: np.ndarray, spec: NoiseSpec) -> np.ndarray:
    """Corrupt an H×W image on the CPU, from a CPU generator: the same seed gives the same noise on any machine."""
    x = torch.from_numpy(clean)[None, None]
    return corrupt(x, spec.type, spec.level, make_generator(spec.seed))[0, 0].numpy()


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.square(a - b, dtype=np.float32)))


@dataclass
class Prepared:
    clean: np.ndarray  # the upload as the model sees it: resized for a fixed-size model
    noisy: np.ndarray | None  # the corrupted clean image, when noise was asked for

    @property
    def model_input(self) -> np.ndarray:
        return self.clean if self.noisy is None else self.noisy


def _prepare_pixels(image: Image.Image, size: tuple[int, int] | None, spec: NoiseSpec | None) -> Prepared:
    clean = load_pixels(image)
    if size is not None:
        clean = resize(clean, size)
    return Prepared(clean, None if spec is None else apply_noise(clean, spec))


async def prepare(data: bytes, entry: LoadedModel, spec: NoiseSpec | None, max_pixels: int) -> Prepared:
    """Decode the upload (size checked from its header first), resize to the model, corrupt if asked."""
    image = open_checked(data, max_pixels)
    width, height = image.size
    return await run_sized(width * height, _prepare_pixels, image, entry.input_size, spec)


async def corrupt_upload(data: bytes, spec: NoiseSpec, max_pixels: int) -> tuple[bytes, int, int]:
    """/corrupt: the corrupted upload as PNG, at the upload's own size; returns (png, width, height)."""
    image = open_checked(data, max_pixels)
    width, height = image.size

    def work() -> bytes:
        return encode_png(apply_noise(load_pixels(image), spec))

    return await run_sized(width * height, work), width, height


@dataclass
class Denoised:
    """One answered image, before encoding."""

    model: str
    prepared: Prepared
    prediction: Prediction
    noise: NoiseSpec | None
    started: float

    @property
    def height(self) -> int:
        return int(self.prediction.output.shape[0])

    @property
    def width(self) -> int:
        return int(self.prediction.output.shape[1])

    async def png(self) -> bytes:
        return await run_sized(self.width * self.height, encode_png, self.prediction.output)

    def scores(self) -> tuple[float, float] | None:
        """(noisy MSE, denoised MSE) against the clean image, when there was noise."""
        noisy = self.prepared.noisy
        if noisy is None:
            return None
        return mse(noisy, self.prepared.clean), mse(self.prediction.output, self.prepared.clean)

    async def response(self) -> DenoiseResponse:
        """The JSON body: PNGs in base64, errors against the clean image when there was noise."""
        response = DenoiseResponse(
            model=self.model,
            width=self.width,
            height=self.height,
            reconstruction_mse=self.prediction.reconstruction_mse,
            denoised_png=_base64(await self.png()),
            latency_ms=0.0,
        )
        scores = self.scores()
        if self.noise is not None and self.prepared.noisy is not None and scores is not None:
            response.noise = self.noise.info()
            response.noisy_png = _base64(await run_sized(self.width * self.height, encode_png, self.prepared.noisy))
            response.noisy_mse, response.denoised_mse = scores
            response.noisy_psnr_db, response.denoised_psnr_db = psnr_db_from_mse(scores[0]), psnr_db_from_mse(scores[1])
        response.latency_ms = (time.perf_counter() - self.started) * 1000.0
        return response


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def denoise_upload(
    data: bytes, entry: LoadedModel, spec: NoiseSpec | None, max_pixels: int, arrival: ArrivalToken | None = None
) -> Denoised:
    """/denoise: one upload through its model's batcher."""
    started = time.perf_counter()
    prepared = await prepare(data, entry, spec, max_pixels)
    assert entry.batcher is not None, "batchers start in the lifespan"
    prediction = await entry.batcher.predict(prepared.model_input, arrival)
    return Denoised(entry.name, prepared, prediction, spec, started)


def batch_noise_specs(
    count: int, noise: NoiseName | None, level: float | None, seed: int | None
) -> list[NoiseSpec | None]:
    """One spec per item of /denoise/batch: with a seed, item i uses seed + i (reproducible, yet no two images
    share a noise pattern); without one, each item draws its own."""
    if noise is None:
        return [None] * count
    if seed is None:
        return [NoiseSpec.choose(noise, level, None) for _ in range(count)]
    return [NoiseSpec.choose(noise, level, (seed + i) % (MAX_SEED + 1)) for i in range(count)]


async def denoise_uploads(
    uploads: list[bytes],
    entry: LoadedModel,
    specs: list[NoiseSpec | None],
    max_pixels: int,
    arrival: ArrivalToken | None = None,
) -> list[Denoised | ServiceError]:
    """/denoise/batch: every upload prepared, then all queued at once so they share batches; errors per item."""
    started = time.perf_counter()
    assert entry.batcher is not None, "batchers start in the lifespan"
    queued: list[tuple[Prepared, asyncio.Future[Prediction]] | ServiceError] = []
    for data, spec in zip(uploads, specs, strict=True):
        try:
            prepared = await prepare(data, entry, spec, max_pixels)
            queued.append((prepared, entry.batcher.enqueue(prepared.model_input, arrival)))
        except ServiceError as exc:
            queued.append(exc)
    results: list[Denoised | ServiceError] = []
    for item, spec in zip(queued, specs, strict=True):
        if isinstance(item, ServiceError):
            results.append(item)
            continue
        try:
            results.append(Denoised(entry.name, item[0], await item[1], spec, started))
        except ServiceError as exc:
            results.append(exc)
    return results
