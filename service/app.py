"""The app factory and its lifespan: load and verify the checkpoints, start the batchers, warm up, serve, stop.

``create_app(settings)`` builds the app; ``uvicorn.run("service.app:create_app", factory=True)`` calls it
with no argument in each worker, which then reads its settings from the ``DAE_`` environment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.middleware.cors import CORSMiddleware

from service.batcher import Arrivals
from service.decode_process import DECODE_PROCESS
from service.errors import ServiceError
from service.forms import HOW_TO_SEND
from service.images import ACCEPTED_FORMATS
from service.logs import install_request_id_factory
from service.middleware import ApiKeyMiddleware, ArrivalMiddleware, BodyLimitMiddleware, RequestContextMiddleware
from service.registry import ModelStore, StartupError
from service.routes import ANSWER_HEADERS, STATIC_DIR, batched_paths, router
from service.settings import Settings
from service.v2_routes import ProtocolErrorMiddleware
from service.v2_routes import router as v2_router

log = logging.getLogger("service")

DOCS_STATIC_PATH = "/static-offline-docs"
# Reachable without the API key: probes, the API's own documentation, the noise list, the demo page and its assets.
OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/noises", "/", "/favicon.ico"}
    | {"/v2/health/live", "/v2/health/ready"}  # the Open Inference Protocol's probes, open as /healthz and /readyz
)
OPEN_PREFIXES = ("/static/", DOCS_STATIC_PATH + "/")

DESCRIPTION = f"""Denoising autoencoders trained on MNIST-style 28×28 digits, served with dynamic batching.

Upload an image as `multipart/form-data` field `file`:
{ACCEPTED_FORMATS}, any mode (a GIF's or TIFF's first frame). Errors are JSON `{{"detail": ...}}` saying what to
fix. When the service runs with an API key, send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`.
"""


def readable_validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    """FastAPI's error list → [{field, message}] a person can act on, without echoing uploaded bytes."""
    readable = []
    for error in errors:
        parts = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")]
        field = ".".join(parts) or "form"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "missing" and field == "file":
            message += f": {HOW_TO_SEND}"
        elif error.get("type") == "missing" and error.get("loc", ("",))[0] == "query":  # the body was the image
            message += f" in the query string (?{field}=...), as the body is the image"
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


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load → start → warm → serve → stop. A bad checkpoint stops start-up; the warm-up runs in the background,
    while the server answers /healthz (and 503 on /readyz and the model routes)."""
    settings: Settings = app.state.settings
    try:
        store = ModelStore.load(settings, app.state.arrivals)
    except (StartupError, RuntimeError) as exc:
        log.error("%s", exc)
        raise
    store.start()
    app.state.store = store
    warm_up = asyncio.create_task(store.warm_up())
    try:
        yield
    finally:
        warm_up.cancel()
        await store.stop()
        await asyncio.to_thread(DECODE_PROCESS.close)  # the HEIC decoder's child, if an upload started one
        app.state.store = None


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app; models load when its lifespan starts."""
    settings = settings or Settings()
    install_request_id_factory()
    app = FastAPIOffline(
        # The routes themselves, not include_router: an included router is matched as a second layer of
        # routing on every request.
        routes=[*router.routes, *v2_router.routes],
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
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # add_middleware wraps what is there, so the last added runs first: the request id, metrics and the
    # access log see every answer (401 and 413 included, and the 500 of an unhandled error, which that
    # layer answers itself), CORS answers preflights before the key check.
    paths, patterns = batched_paths(app.routes)
    app.add_middleware(ArrivalMiddleware, arrivals=app.state.arrivals, paths=paths, patterns=patterns)
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
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "Accept",
                "X-Request-ID",
                "Content-Type",
                "Inference-Header-Content-Length",
            ],
            expose_headers=[
                *ANSWER_HEADERS,
                "Retry-After",
                "X-Request-ID",
                "Inference-Header-Content-Length",
            ],
        )
    app.add_middleware(RequestContextMiddleware, access_log=settings.access_log)
    # Outermost: the protocol's {"error"} shape for every error under /v2, whichever layer inside it answered.
    app.add_middleware(ProtocolErrorMiddleware)
    return app
