"""The loaded models of one worker: verify every checkpoint, place it, build its ``Denoiser``, start, warm, stop.

Plain Python (no HTTP). The app's lifespan reads as this module's life cycle:
``ModelStore.load`` (checkpoints verified, every model placed and given its runner and batcher) →
``start`` (the child process, the batchers) → ``warm_up`` (a forward per batch size) → serve (the routes
call ``get``) → ``stop``.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

from models.checkpoint import CheckpointError, ModelCard, find_checkpoints, load_checkpoint
from models.device import channels_last_if_convolutional, dtype_name, resolve_device
from service import metrics
from service.batcher import Arrivals, ArrivalToken, DynamicBatcher
from service.denoiser import Denoised, Denoiser
from service.errors import ServiceError, Unavailable, UnknownModel
from service.images import open_upload
from service.inference import InferenceRunner, Runner
from service.inference_process import InferenceProcess, ProcessRunner
from service.logs import log_config
from service.noise import DIGIT_SIZE, NoiseRequest
from service.placement import WorkerPlan, plan_worker
from service.settings import Settings

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The service cannot start: no usable checkpoint, or one failed verification."""


def prepare_for_serving(model: nn.Module, device: torch.device) -> nn.Module:
    """Channels-last weights for a convolutional model on CPU: oneDNN's convolutions run about a fifth faster."""
    if device.type == "cpu":
        model = channels_last_if_convolutional(model)
    return model.eval().requires_grad_(False)


def load_models(directory: Path, device: torch.device, skip_bad: bool = False) -> list[tuple[nn.Module, ModelCard]]:
    """Load and verify every checkpoint in ``directory`` (sorted by name).

    A checkpoint failing verification raises ``StartupError`` naming the file, or with ``skip_bad`` is
    logged and left out; no usable checkpoint at all is always an error.
    """
    if not directory.is_dir():
        raise StartupError(f"checkpoint folder {directory} does not exist (set --checkpoint-dir or DAE_CHECKPOINT_DIR)")
    loaded = []
    for card_path in find_checkpoints(directory):
        try:
            model, card = load_checkpoint(card_path, device)
        except CheckpointError as exc:
            if not skip_bad:
                raise StartupError(f"refusing to start: {exc} (DAE_SKIP_BAD_CHECKPOINTS=true skips it)") from exc
            log.warning("skipping checkpoint %s: %s", card_path, exc)
            continue
        loaded.append((prepare_for_serving(model, device), card))
        log.info("loaded %s (%s, %d parameters) on %s", card.name, card.architecture, card.parameters, device)
    if not loaded:
        raise StartupError(f"no usable checkpoint (*.json model card with its weights) in {directory}")
    names = [card.name for _, card in loaded]
    if len(set(names)) != len(names):
        raise StartupError(f"two model cards in {directory} share a name: {sorted(names)}")
    return loaded


def warm_up_batch_sizes(max_batch_size: int) -> list[int]:
    """Powers of two up to the largest batch, and the largest: oneDNN builds its kernels per shape on first use."""
    return sorted({1, max_batch_size} | {2**k for k in range(max_batch_size.bit_length()) if 2**k < max_batch_size})


class ModelStore:
    """Every model of this worker by name, the default, the threads and child process that run them, readiness."""

    def __init__(
        self,
        denoisers: dict[str, Denoiser],
        default_name: str,
        plan: WorkerPlan,
        executor: ThreadPoolExecutor,
        process: InferenceProcess | None,
        warm_up_sizes: list[int],
        photo_name: str | None = None,
        max_pixels: int = 1 << 62,
    ) -> None:
        self.denoisers = denoisers
        self.default_name = default_name
        self.photo_name = photo_name  # the model for images that are not 28×28 digits, when loaded
        self.max_pixels = max_pixels
        self.plan = plan
        self.executor = executor
        self.process = process
        self.warm_up_sizes = warm_up_sizes
        self.ready = False
        self.not_ready_reason = "models are warming up"
        self._previous_torch_threads = torch.get_num_threads()

    @classmethod
    def load(cls, settings: Settings, arrivals: Arrivals) -> ModelStore:
        """Verify and place every checkpoint and build its ``Denoiser``; nothing runs until ``start``."""
        device = resolve_device(settings.device)
        loaded = {card.name: (model, card) for model, card in load_models(
            settings.checkpoint_dir, device, settings.skip_bad_checkpoints
        )}  # fmt: skip
        plan = plan_worker(settings, {name: model for name, (model, _) in loaded.items()})
        # Shared by every model's batcher: threads that compute a forward, or hand a batch to the child and wait.
        executor = ThreadPoolExecutor(
            plan.inference_threads, "dae-inference", initializer=torch.set_num_threads, initargs=(plan.torch_threads,)
        )
        process = None
        if plan.in_child:
            process = InferenceProcess(
                [(name, loaded[name][0], plan.placements[name].dtype) for name in plan.in_child],
                plan.child_torch_threads,
                batch_timeout_s=settings.request_timeout_s,
                logging_config=log_config(settings.log_level, settings.log_format),
            )
        denoisers = {}
        for name, (model, card) in loaded.items():
            placement = plan.placements[name]
            here = InferenceRunner(name, model, placement.device, placement.dtype)
            runner: Runner = here
            if process is not None and placement.backend == "process":
                runner = ProcessRunner(name, process)
            # A request alone in the worker gets every core, and one whose model is in the child stays here, on
            # the event loop (placement.py); on CUDA the GPU does the work wherever it is launched from.
            run_alone = (
                None if plan.device.type == "cuda" else functools.partial(here.run, threads=plan.alone_torch_threads)
            )
            batcher = DynamicBatcher(
                name,
                runner.run,
                None if placement.backend == "loop" else executor,
                max_batch_size=settings.max_batch_size,
                max_batch_pixels=plan.batch_pixels,
                max_batch_delay_s=settings.max_batch_delay_ms / 1000.0,
                max_queue_size=settings.max_queue_size,
                timeout_s=settings.request_timeout_s,
                arrivals=arrivals,
                max_in_flight=plan.inference_threads,
                run_alone=run_alone,
                alone_on_loop=placement.backend == "process",
            )
            denoisers[name] = Denoiser(card, placement, runner, batcher, settings.tile_size, settings.tile_overlap)
        default_name = settings.default_model
        if default_name not in denoisers:
            default_name = next(iter(denoisers))
            log.warning(
                "default model %r is not loaded; using %r (set DAE_DEFAULT_MODEL)", settings.default_model, default_name
            )
        photo_name = settings.default_photo_model if settings.default_photo_model in denoisers else None
        return cls(
            denoisers,
            default_name,
            plan,
            executor,
            process,
            warm_up_batch_sizes(settings.max_batch_size),
            photo_name,
            settings.max_image_pixels,
        )

    def start(self) -> None:
        """Spawn the child process (if any model runs there) and start every batcher; call inside the event loop."""
        torch.set_num_threads(self.plan.torch_threads)
        if self.process is not None:
            self.process.start()
        for denoiser in self.denoisers.values():
            denoiser.batcher.start()
        metrics.WORKER_UP.set(1)
        log.info(
            "loaded %d model(s) on %s (%s); %d batch(es) in flight, %d torch thread(s) each; warming up",
            len(self.denoisers),
            self.plan.device,
            ", ".join(
                f"{n} ({dtype_name(d.placement.dtype)}, {d.placement.backend})" for n, d in self.denoisers.items()
            ),
            self.plan.inference_threads,
            self.plan.torch_threads,
        )

    async def warm_up(self) -> None:
        """A forward per model and batch size, in an inference thread; ready after, or ``not_ready_reason`` says why."""
        loop = asyncio.get_running_loop()
        try:
            for denoiser in self.denoisers.values():
                tile = denoiser.name == self.photo_name
                await loop.run_in_executor(self.executor, denoiser.warm_up, self.warm_up_sizes, tile)
        except Exception as exc:
            self.not_ready_reason = f"warm-up failed: {exc}"
            log.error("%s", self.not_ready_reason, exc_info=exc)
            return
        # What start-up created (torch, the models) lives as long as the process: moving it out of the
        # collector's sight keeps full collections, and the latency spikes they cause, short.
        gc.collect()
        gc.freeze()
        self.ready = True
        metrics.READY.set(1)
        log.info("ready: %s (default %s)", ", ".join(self.denoisers), self.default_name)

    async def stop(self) -> None:
        """Answer what is queued with 503, stop the batchers, the threads and the child."""
        self.ready = False
        for denoiser in self.denoisers.values():
            await denoiser.batcher.stop()
        self.executor.shutdown(wait=True)
        if self.process is not None:
            self.process.shutdown()
        metrics.READY.set(0)
        metrics.WORKER_UP.set(0)
        metrics.worker_stopped()
        torch.set_num_threads(self._previous_torch_threads)
        gc.unfreeze()

    def get(self, name: str | None) -> Denoiser:
        """The model called ``name`` (the default for None); ``UnknownModel`` (404) names the choices."""
        if not self.ready:
            raise Unavailable(f"the service is not ready: {self.not_ready_reason}")
        denoiser = self.denoisers.get(name or self.default_name)
        if denoiser is None:
            raise UnknownModel(f"no model named {name!r}; loaded: {', '.join(self.denoisers)}")
        return denoiser

    def choose(self, width: int, height: int) -> tuple[Denoiser, str]:
        """The model for an image of this size when the request names none, and why: the digit model for a
        28×28 image and the photo model for any other (the default model for all when no photo model is loaded)."""
        if self.photo_name is None:
            return self.get(None), "no model named: the default model"
        if (height, width) == DIGIT_SIZE:
            return self.get(None), "no model named: a 28×28 image goes to the digit model"
        return self.get(self.photo_name), f"no model named: a {width}×{height} image goes to the photo model"

    async def denoise_upload(
        self,
        name: str | None,
        data: bytes,
        noise: NoiseRequest | None,
        arrival: ArrivalToken | None,
        answer_type: str | None = None,
    ) -> Denoised:
        """One upload through the model it names (an unknown one is the first thing to say) or the one that
        suits it (``choose``); answered for JSON, or as the image ``answer_type`` (``Denoiser.encode``)."""
        started = time.perf_counter()
        named = None if name is None else self.get(name)
        image = await open_upload(data, self.max_pixels)
        denoiser, reason = (named, "named in the request") if named is not None else self.choose(*image.size)
        return await denoiser.denoise(image, noise, arrival, answer_type, started, reason)

    async def denoise_uploads(
        self, name: str | None, uploads: list[bytes], noises: list[NoiseRequest | None], arrival: ArrivalToken | None
    ) -> list[Denoised | ServiceError]:
        """Several uploads at once, so that they share batches; an upload that fails carries its own error
        while the others are answered."""

        async def one(data: bytes, noise: NoiseRequest | None) -> Denoised | ServiceError:
            try:
                return await self.denoise_upload(name, data, noise, arrival)
            except ServiceError as exc:
                return exc

        return list(await asyncio.gather(*(one(data, noise) for data, noise in zip(uploads, noises, strict=True))))
