"""One model's serving path, as one object: decode → (corrupt) → batch → predict → measure → encode.

``ModelStore.load`` builds a ``Denoiser`` per model, complete (its placement, runner and batcher), at
start-up; the routes parse the form and call ``denoise`` or ``denoise_many``. Each step is one small
method, in the order a request takes them. No HTTP here: errors are ``service.errors`` exceptions that
carry their status, and the answer is a plain ``Denoised`` that the routes shape into JSON or a PNG.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.checkpoint import ModelCard
from models.metrics import psnr_db_from_mse
from service.batcher import ArrivalToken, DynamicBatcher
from service.errors import ServiceError
from service.images import encode_png, load_pixels, open_checked, resize, run_sized
from service.inference import Prediction, Runner
from service.noise import NoiseSpec
from service.placement import Placement

log = logging.getLogger(__name__)

# Fully convolutional models take any size; they are warmed up at MNIST's, the size they are mostly asked.
NOMINAL_SIZE = (28, 28)


@dataclass(frozen=True)
class Prepared:
    """An upload decoded for the model: resized for a fixed-size model, corrupted when noise was asked for."""

    clean: np.ndarray
    noisy: np.ndarray | None
    noise: NoiseSpec | None

    @property
    def model_input(self) -> np.ndarray:
        return self.clean if self.noisy is None else self.noisy

    @property
    def pixels(self) -> int:
        return int(self.clean.size)


@dataclass(frozen=True)
class Scores:
    """How far the noisy and the denoised image are from the clean one (when the service added the noise)."""

    noisy_mse: float
    denoised_mse: float

    @property
    def noisy_psnr_db(self) -> float:
        return psnr_db_from_mse(self.noisy_mse)

    @property
    def denoised_psnr_db(self) -> float:
        return psnr_db_from_mse(self.denoised_mse)


@dataclass(frozen=True)
class Denoised:
    """One answered image, encoded."""

    model: str
    width: int
    height: int
    reconstruction_mse: float  # model input vs model output
    denoised_png: bytes
    latency_ms: float
    noise: NoiseSpec | None = None
    scores: Scores | None = None
    noisy_png: bytes | None = None  # left out when the client asked for the denoised PNG alone


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.square(a - b, dtype=np.float32)))


class Denoiser:
    """A loaded model and everything that serves it; ``warm_up`` before the first request."""

    def __init__(
        self, card: ModelCard, placement: Placement, runner: Runner, batcher: DynamicBatcher, max_pixels: int
    ) -> None:
        self.card = card
        self.name = card.name
        self.placement = placement
        self.runner = runner
        self.batcher = batcher
        self.max_pixels = max_pixels
        size = card.input_size
        self.input_size: tuple[int, int] | None = (size[0], size[1]) if size else None  # (height, width)

    # decode → (corrupt)
    async def decode(self, data: bytes, noise: NoiseSpec | None) -> Prepared:
        """The upload as the model takes it (size checked from its header first); ``BadImage``, ``TooLarge``."""
        image = open_checked(data, self.max_pixels)
        width, height = image.size
        return await run_sized(width * height, self._prepare, image, noise)

    def _prepare(self, image: Image.Image, noise: NoiseSpec | None) -> Prepared:
        clean = load_pixels(image)
        if self.input_size is not None:
            clean = resize(clean, self.input_size)
        return Prepared(clean, None if noise is None else noise.apply(clean), noise)

    # batch → predict
    async def predict(self, prepared: Prepared, arrival: ArrivalToken | None = None) -> Prediction:
        return await self.batcher.predict(prepared.model_input, arrival)

    # measure
    @staticmethod
    def measure(prepared: Prepared, prediction: Prediction) -> Scores | None:
        """Errors against the clean image, when the service added the noise (else there is no clean image)."""
        if prepared.noisy is None:
            return None
        return Scores(mse(prepared.noisy, prepared.clean), mse(prediction.output, prepared.clean))

    # encode
    async def encode(
        self, prepared: Prepared, prediction: Prediction, started: float, with_noisy: bool = True
    ) -> Denoised:
        output = prediction.output
        height, width = output.shape
        denoised_png = await run_sized(output.size, encode_png, output)
        noisy_png = None
        if with_noisy and prepared.noisy is not None:
            noisy_png = await run_sized(prepared.pixels, encode_png, prepared.noisy)
        return Denoised(
            model=self.name,
            width=int(width),
            height=int(height),
            reconstruction_mse=prediction.reconstruction_mse,
            denoised_png=denoised_png,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            noise=prepared.noise,
            scores=self.measure(prepared, prediction),
            noisy_png=noisy_png,
        )

    # the whole path
    async def denoise(
        self, data: bytes, noise: NoiseSpec | None, arrival: ArrivalToken | None = None, with_noisy: bool = True
    ) -> Denoised:
        """One upload: decode, corrupt if asked, predict in a batch, measure, encode."""
        started = time.perf_counter()
        prepared = await self.decode(data, noise)
        prediction = await self.predict(prepared, arrival)
        return await self.encode(prepared, prediction, started, with_noisy)

    async def denoise_many(
        self, uploads: list[bytes], noises: list[NoiseSpec | None], arrival: ArrivalToken | None = None
    ) -> list[Denoised | ServiceError]:
        """Several uploads: every one decoded, then all queued at once so that they share batches; an upload
        that fails carries its own error while the others are answered."""
        started = time.perf_counter()
        queued: list[tuple[Prepared, asyncio.Future[Prediction]] | ServiceError] = []
        for data, noise in zip(uploads, noises, strict=True):
            try:
                prepared = await self.decode(data, noise)
                queued.append((prepared, self.batcher.enqueue(prepared.model_input, arrival)))
            except ServiceError as exc:
                queued.append(exc)
        results: list[Denoised | ServiceError] = []
        for item in queued:
            if isinstance(item, ServiceError):
                results.append(item)
                continue
            try:
                results.append(await self.encode(item[0], await item[1], started))
            except ServiceError as exc:
                results.append(exc)
        return results

    def warm_up(self, batch_sizes: list[int]) -> None:
        """A real forward per batch size (oneDNN builds its kernels per shape on first use); raises if one fails."""
        height, width = self.input_size or NOMINAL_SIZE
        for size in batch_sizes:
            outcome = self.runner.run([np.full((height, width), 0.5, dtype=np.float32)] * size)[0]
            if isinstance(outcome, Exception):
                raise RuntimeError(f"warm-up of model {self.name!r} failed: {outcome.detail}")
        log.info("warmed up %s (batch sizes %s)", self.name, batch_sizes)
