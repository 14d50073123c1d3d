"""One model's serving path, as one object: decode → (corrupt) → tile → batch → predict → stitch → measure → encode.

``ModelStore.load`` builds a ``Denoiser`` per model, complete (its placement, runner and batcher), at
start-up; ``ModelStore`` opens the upload, picks the model and calls ``denoise``. Each step
is one small method, in the order a request takes them. No HTTP here: errors are ``service.errors``
exceptions that carry their status, and the answer is a plain ``Denoised`` that the routes shape into
JSON or a PNG.

Images come in any size and kind. A model of a fixed size gets the image resized to it. A colour image
is three planes, each denoised as a grayscale image; a photo model also denoises the same image as
opponent colour planes and merges the two, unless the first answer shows impulse noise
(``service.colour``). A plane larger than a tile is cut into overlapping tiles of one shape
(``service.tiles``), which go through the batcher like any image (sharing forward passes where
``service.placement`` allows the pixels) and are stitched back without seams. A request keeps at most
half a batch of its tiles queued at a time, so that a large photo holds a small request back by no more
than one batch, and the queue, whatever the image, holds a bounded number of pixels; but never fewer than
the forwards the batcher runs at once, so that a photo alone keeps every inference thread busy (on a CPU,
where one 512×512 tile is a whole batch, one tile at a time left one of the two cores idle: a 1024×1024
colour photo took 58 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.checkpoint import ModelCard
from models.metrics import psnr_db_from_mse
from service.batcher import ArrivalToken, DynamicBatcher
from service.colour import has_impulses, merge_colour_estimates, to_opponent
from service.encoding import encode_answer, encode_picture
from service.errors import ServiceError
from service.images import Picture, load_picture, run_sized
from service.inference import Prediction, Runner
from service.noise import NoiseRequest, NoiseSpec
from service.placement import Placement
from service.tiles import Grid

log = logging.getLogger(__name__)

# Fully convolutional models take any size; they are warmed up at MNIST's, the size digits come in (and the
# photo model also at one tile, the size photos come in).
NOMINAL_SIZE = (28, 28)


@dataclass(frozen=True)
class Prepared:
    """An upload decoded for the model: resized for a fixed-size model, corrupted when noise was asked for."""

    clean: Picture
    noisy: Picture | None
    noise: NoiseSpec | None

    @property
    def model_input(self) -> Picture:
        return self.clean if self.noisy is None else self.noisy


@dataclass(frozen=True)
class Output:
    """The model's answer for a whole picture: its planes, and the reconstruction error (input vs output)."""

    planes: np.ndarray
    reconstruction_mse: float


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
    denoised_image: bytes  # a PNG for a JSON answer, else of the type the request's Accept asked for
    latency_ms: float
    noise: NoiseSpec | None = None
    scores: Scores | None = None
    noisy_png: bytes | None = None  # left out when the client asked for the denoised image alone
    reason: str = ""  # why this model answered (named, or chosen for the image)


def mse(a: np.ndarray, b: np.ndarray) -> float:
    if a.ndim == 3:  # plane by plane: a colour photo's temporaries are large
        return sum(mse(plane_a, plane_b) for plane_a, plane_b in zip(a, b, strict=True)) / len(a)
    return float(np.mean(np.square(a - b, dtype=np.float32)))


class Denoiser:
    """A loaded model and everything that serves it; ``warm_up`` before the first request."""

    def __init__(
        self,
        card: ModelCard,
        placement: Placement,
        runner: Runner,
        batcher: DynamicBatcher,
        tile_size: int,
        tile_overlap: int,
    ) -> None:
        self.card = card
        self.name = card.name
        self.placement = placement
        self.runner = runner
        self.batcher = batcher
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        size = card.input_size
        self.input_size: tuple[int, int] | None = (size[0], size[1]) if size else None  # (height, width)

    # decode → (corrupt)
    async def decode(self, image: Image.Image, noise: NoiseRequest | None) -> Prepared:
        """The upload (opened by ``images.open_checked``) as the model takes it, with the noise asked for applied
        (pinned for the picture it lands on: ``NoiseRequest.for_image``); ``BadImage`` if it is corrupt."""
        width, height = image.size
        return await run_sized(width * height, self._prepare, image, noise)

    def _prepare(self, image: Image.Image, noise: NoiseRequest | None) -> Prepared:
        clean = load_picture(image)
        if self.input_size is not None:
            clean = clean.resized(self.input_size)
        if noise is None:
            return Prepared(clean, None, None)
        spec = noise.for_image(clean.width, clean.height)
        return Prepared(clean, clean.with_planes(spec.apply(clean.planes)), spec)

    # tile → batch → predict → stitch
    async def predict(self, prepared: Prepared, arrival: ArrivalToken | None = None) -> Output:
        planes = prepared.model_input.planes
        channels, height, width = planes.shape
        if channels == 1 and height <= self.tile_size and width <= self.tile_size:
            # A grey image no larger than a tile: the common case, and the quickest.
            prediction = await self.batcher.predict(planes[0], arrival)
            return Output(prediction.output[None], prediction.reconstruction_mse)
        if channels == 3 and self.card.learnt_from_photos:  # a digit model would take flat chroma for a digit
            output = await self._predict_colour(planes, arrival)
        else:
            output = await self._predict_planes(planes, arrival)
        return Output(output, mse(output, planes))

    async def _predict_colour(self, rgb: np.ndarray, arrival: ArrivalToken | None) -> np.ndarray:
        """The R, G, B planes and the opponent planes, merged; or, when the R, G, B answer shows impulse noise,
        that answer. Both sets of tiles are queued at once, R, G, B first: the opponent tiles take the forwards
        the last R, G, B tiles leave free (a 512×512 photo alone on two cores: three rounds of two forwards,
        not two of two and two of one), and those not yet run are cancelled when impulses make them useless."""
        pixels = rgb.shape[1] * rgb.shape[2]
        opponent = await run_sized(pixels, to_opponent, rgb)
        with self._tiles_queued([*rgb, *opponent], arrival) as (grid, tasks):  # six planes, not one copy of them
            first = len(tasks) // 2
            denoised_rgb = await self._stitched(grid, tasks[:first], 3)
            if await run_sized(pixels, has_impulses, rgb, denoised_rgb):
                return denoised_rgb
            denoised_opponent = await self._stitched(grid, tasks[first:], 3)
        return await run_sized(pixels, merge_colour_estimates, rgb, opponent, denoised_rgb, denoised_opponent)

    async def _predict_planes(self, planes: np.ndarray, arrival: ArrivalToken | None) -> np.ndarray:
        """Each plane cut into tiles of one grid (a plane within one tile is that tile), all of them through
        the batcher together, stitched back into planes."""
        with self._tiles_queued(planes, arrival) as (grid, tasks):
            return await self._stitched(grid, tasks, len(planes))

    @contextlib.contextmanager
    def _tiles_queued(
        self, planes: np.ndarray | list[np.ndarray], arrival: ArrivalToken | None
    ) -> Iterator[tuple[Grid, list[asyncio.Task[Prediction]]]]:
        """``planes`` cut into tiles of one grid, a task per tile putting it through the batcher, in order;
        on leaving, the tasks not yet done are cancelled (a tile failed, the request was cancelled, or the
        rest is not needed) and their tiles never run."""
        height, width = planes[0].shape
        grid = Grid.cover(height, width, self.tile_size, self.tile_overlap)
        tasks = self._queue_tiles(grid.cut_planes(planes), arrival)
        try:
            yield grid, tasks
        finally:
            for task in tasks:
                task.cancel()

    def _queue_tiles(self, tiles: list[np.ndarray], arrival: ArrivalToken | None) -> list[asyncio.Task[Prediction]]:
        """A task per tile that puts it through the batcher, at most half a batch of them, or one per forward
        the batcher runs at once if that is more, queued at a time (see the module's docstring)."""
        half_batch = min(self.batcher.max_batch_size, self.batcher.max_batch_pixels // tiles[0].size) // 2
        window = asyncio.Semaphore(max(1, half_batch, self.batcher.max_in_flight))

        async def one(tile: np.ndarray) -> Prediction:
            async with window:
                return await self.batcher.enqueue(tile, arrival)

        return [asyncio.ensure_future(one(tile)) for tile in tiles]

    @staticmethod
    async def _stitched(grid: Grid, tasks: list[asyncio.Task[Prediction]], planes: int) -> np.ndarray:
        """The ``planes`` planes whose tiles ``tasks`` are predicting, stitched."""
        outputs = [prediction.output for prediction in await asyncio.gather(*tasks)]
        return await run_sized(planes * grid.height * grid.width, grid.stitch_planes, outputs, planes)

    # measure
    @staticmethod
    def measure(prepared: Prepared, output: Output) -> Scores | None:
        """Errors against the clean image, when the service added the noise (else there is no clean image)."""
        if prepared.noisy is None:
            return None
        clean = prepared.clean.planes
        return Scores(mse(prepared.noisy.planes, clean), mse(output.planes, clean))

    # encode
    async def encode(
        self, prepared: Prepared, output: Output, started: float, answer_type: str | None = None, reason: str = ""
    ) -> Denoised:
        """The denoised image as a PNG, and the noisy one when the service added the noise (a JSON answer:
        ``answer_type`` None); or the denoised image alone, as the ``answer_type`` asked for (an image answer)."""
        clean = prepared.clean
        pixels = clean.height * clean.width
        denoised = await run_sized(pixels, encode_answer, output.planes, clean, answer_type or "image/png")
        noisy_png = None
        if answer_type is None and prepared.noisy is not None:
            noisy_png = await run_sized(pixels, encode_picture, prepared.noisy.planes, clean)
        return Denoised(
            model=self.name,
            width=clean.width,
            height=clean.height,
            reconstruction_mse=output.reconstruction_mse,
            denoised_image=denoised,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            noise=prepared.noise,
            scores=self.measure(prepared, output),
            noisy_png=noisy_png,
            reason=reason,
        )

    # the whole path
    async def denoise(
        self,
        image: Image.Image,
        noise: NoiseRequest | None,
        arrival: ArrivalToken | None = None,
        answer_type: str | None = None,
        started: float | None = None,
        reason: str = "",
    ) -> Denoised:
        """One upload: decode, corrupt if asked, predict (tiled and batched), measure, encode (``encode``: for JSON,
        or as the image type asked); ``reason`` says why this model is the one answering."""
        started = time.perf_counter() if started is None else started
        prepared = await self.decode(image, noise)
        output = await self.predict(prepared, arrival)
        return await self.encode(prepared, output, started, answer_type, reason)

    def warm_up(self, batch_sizes: list[int], tile: bool = False) -> None:
        """A real forward per batch size (oneDNN builds its kernels per shape on first use), and with ``tile``
        one at a tile's size (for the photo model: photos come that big); raises if one fails.

        Not warmed: the server's own copy of a model that runs in the child, which a request alone in the
        worker runs on the event loop. Warming it from the inference thread, at every core, left the event
        loop's later forwards about a quarter slower at one connection; its first request builds its kernels
        instead."""
        height, width = self.input_size or NOMINAL_SIZE
        shapes = [((height, width), size) for size in batch_sizes]
        if tile and self.input_size is None:
            shapes.append(((self.tile_size, self.tile_size), 1))
        for (h, w), size in shapes:
            outcome = self.runner.run([np.full((h, w), 0.5, dtype=np.float32)] * size)[0]
            if isinstance(outcome, ServiceError):
                raise RuntimeError(f"warm-up of model {self.name!r} failed: {outcome.detail}")
        log.info("warmed up %s (batch sizes %s)", self.name, batch_sizes)
