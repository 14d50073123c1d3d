"""The app factory and its lifespan: load and verify the checkpoints, start the batchers, warm up, serve.

``create_app(settings)`` builds the app; ``uvicorn.run("service.app:create_app", factory=True)`` calls it
with no argument in each worker, which then reads its settings from the ``DAE_`` environment.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.middleware.cors import CORSMiddleware

from models.device import dtype_name, is_convolutional, resolve_device
from service import metrics
from service.batcher import Arrivals, DynamicBatcher
from service.errors import ServiceError
from service.inference_process import InferenceProcess, ProcessRunner
from service.logs import install_request_id_factory, log_config
from service.middleware import ApiKeyMiddleware, ArrivalMiddleware, BodyLimitMiddleware, RequestContextMiddleware
from service.registry import ModelStore, StartupError, load_models
from service.routes import BATCHING_PATHS, STATIC_DIR, router
from service.settings import InferencePlan, Settings

log = logging.getLogger("service")

DOCS_STATIC_PATH = "/static-offline-docs"
# Reachable without the API key: probes, the API's own documentation, the demo page and its assets.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/", "/favicon.ico"})
OPEN_PREFIXES = ("/static/", DOCS_STATIC_PATH + "/")

DESCRIPTION = """Denoising autoencoders trained on MNIST-style 28×28 digits, served with dynamic batching.

Upload an image as `multipart/form-data` field `file` (PNG, JPEG, BMP, TIFF, WebP, GIF first frame, any
mode). Errors are JSON `{"detail": ...}` saying what to fix. When the service runs with an API key, send
it as `Authorization: Bearer <key>` or `X-API-Key: <key>`.
"""


def readable_validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    """FastAPI's error list → [{field, message}] a person can act on, without echoing uploaded bytes."""
    readable = []
    for error in errors:
        parts = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")]
        field = ".".join(parts) or "form"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "missing" and field == "file":
            message += ": send the image as a multipart/form-data field named 'file'"
        elif error.get("type") == "extra_forbidden":
            message = "unknown field: check its name against /docs (the image goes in 'file')"
        readable.append({"field": field, "message": message})
    return readable


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if exc.status_code == 500:  # a fault of the service (a model that raised), not of the client: keep a record
        log.error("%s %s failed: %s", request.method, request.url.path, exc.detail)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    readable = readable_validation_errors(list(exc.errors()))
    detail = "; ".join(f"{item['field']}: {item['message']}" for item in readable)
    return JSONResponse({"detail": detail, "errors": readable}, status_code=422)


async def _warm_up(store: ModelStore, executor: ThreadPoolExecutor) -> None:
    try:
        await asyncio.get_running_loop().run_in_executor(executor, store.warm_up)
    except Exception as exc:
        store.not_ready_reason = f"warm-up failed: {exc}"
        log.error("%s", store.not_ready_reason, exc_info=exc)
        return
    # What start-up created (torch, the models) lives as long as the process: moving it out of the
    # collector's sight keeps full collections, and the latency spikes they cause, short.
    gc.collect()
    gc.freeze()
    store.ready = True
    metrics.READY.set(1)
    log.info("ready: %s (default %s)", ", ".join(store.models), store.default_name)


def _start_inference_process(store: ModelStore, settings: Settings, plan: InferencePlan) -> InferenceProcess | None:
    """Hand the models that belong in the child process to one, and their runners to it; None if none do.

    Under auto only the convolutional models move: an MLP's forward is shorter than the pipe's round
    trip, so it runs faster in a thread (1.1k against 0.9k requests/s at one connection).
    """
    moved = [
        entry
        for entry in store.models.values()
        if settings.inference_backend == "process" or is_convolutional(entry.model)
    ]
    if not moved:
        return None
    process = InferenceProcess(
        [(entry.name, entry.model, entry.runner.dtype) for entry in moved],
        plan.torch_threads,
        batch_timeout_s=settings.request_timeout_s,
        logging_config=log_config(settings.log_level, settings.log_format),
    )
    for entry in moved:
        entry.runner = ProcessRunner(entry.name, entry.runner.dtype, process)
    return process


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load every checkpoint (a bad one stops start-up), start one batcher per model, warm up in the background.

    The server answers /healthz (and 503 on /readyz and the model routes) while the warm-up runs.
    """
    settings: Settings = app.state.settings
    previous_threads = torch.get_num_threads()
    try:
        device = resolve_device(settings.device)
        plan = settings.inference_plan(device.type)
        torch.set_num_threads(plan.torch_threads)
        loaded = load_models(settings.checkpoint_dir, device, settings.skip_bad_checkpoints)
    except (StartupError, RuntimeError) as exc:
        log.error("%s", exc)
        torch.set_num_threads(previous_threads)
        raise
    store = ModelStore.from_loaded(
        loaded, device, settings.default_model, settings.max_batch_size, settings.inference_dtype
    )
    # The inference threads, shared by every model's batcher (Settings.inference_plan says how many, and
    # why). With the process backend each only hands its batch to the child process and waits.
    executor = ThreadPoolExecutor(
        plan.in_flight, "dae-inference", initializer=torch.set_num_threads, initargs=(plan.torch_threads,)
    )
    process = _start_inference_process(store, settings, plan) if plan.backend == "process" else None
    for entry in store.models.values():
        entry.batcher = DynamicBatcher(
            entry.name,
            entry.runner.run,
            executor,
            max_batch_size=settings.max_batch_size,
            max_batch_delay_s=settings.max_batch_delay_ms / 1000.0,
            max_queue_size=settings.max_queue_size,
            timeout_s=settings.request_timeout_s,
            arrivals=app.state.arrivals,
            max_in_flight=plan.in_flight,
        )
        entry.batcher.start()
    app.state.store = store
    app.state.inference_process = process
    metrics.WORKER_UP.set(1)
    warm_up = asyncio.create_task(_warm_up(store, executor))
    log.info(
        "loaded %d model(s) on %s (%s); %d batch(es) in flight, %d torch thread(s) each; warming up",
        len(store.models),
        device,
        ", ".join(f"{e.name} {dtype_name(e.runner.dtype)} in {e.runner.backend}" for e in store.models.values()),
        plan.in_flight,
        plan.torch_threads,
    )
    try:
        yield
    finally:
        warm_up.cancel()
        store.ready = False
        for entry in store.models.values():
            if entry.batcher is not None:
                await entry.batcher.stop()
        executor.shutdown(wait=True)
        if process is not None:
            process.shutdown()
        app.state.store = None
        metrics.READY.set(0)
        metrics.WORKER_UP.set(0)
        metrics.worker_stopped()
        torch.set_num_threads(previous_threads)
        gc.unfreeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app; models load when its lifespan starts."""
    settings = settings or Settings()
    install_request_id_factory()
    app = FastAPIOffline(
        title="Denoising autoencoder service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
        static_url=DOCS_STATIC_PATH,
    )
    app.state.settings = settings
    app.state.store = None
    app.state.arrivals = Arrivals()
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # add_middleware wraps what is there, so the last added runs first: the request id, metrics and the
    # access log see every answer (401 and 413 included, and the 500 of an unhandled error, which that
    # layer answers itself), CORS answers preflights before the key check.
    app.add_middleware(ArrivalMiddleware, arrivals=app.state.arrivals, paths=BATCHING_PATHS)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    if settings.api_key is not None:
        app.add_middleware(
            ApiKeyMiddleware,
            api_key=settings.api_key.get_secret_value(),
            open_paths=OPEN_PATHS,
            open_prefixes=OPEN_PREFIXES,
        )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Accept", "X-Request-ID"],
            expose_headers=["X-Reconstruction-MSE", "X-Model", "X-Noise-Seed", "Retry-After", "X-Request-ID"],
        )
    app.add_middleware(RequestContextMiddleware, access_log=settings.access_log)
    return app
