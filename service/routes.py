"""The HTTP routes: each parses its form, calls the model's ``Denoiser`` (or ``service.noise``), shapes the answer."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from models.corruptions import NOISES
from models.device import dtype_name
from service import metrics
from service.batcher import ArrivalToken
from service.denoiser import Denoised
from service.encoding import ANSWER_TYPES
from service.errors import InvalidField, ServiceError, Unavailable
from service.forms import form_body, read_form
from service.middleware import ARRIVAL_SCOPE_KEY
from service.noise import NoiseRequest, NoiseSpec, corrupt_upload
from service.registry import ModelStore
from service.schemas import (
    BatchItem,
    BatchResponse,
    CorruptForm,
    DenoiseBatchForm,
    DenoiseForm,
    DenoiseResponse,
    ErrorResponse,
    Health,
    ModelInfo,
    ModelsResponse,
    NoiseInfo,
    NoiseInfoEntry,
    NoisesResponse,
    Readiness,
    ValidationErrorResponse,
)
from service.settings import Settings

STATIC_DIR = Path(__file__).parent / "static"
Endpoint = TypeVar("Endpoint", bound=Callable[..., Awaitable[Any]])

_ERROR_TEXT = {
    400: "the upload is empty, not an image, or corrupt",
    401: "the API key is missing or wrong (only when DAE_API_KEY is set)",
    404: "no model by that name",
    413: "too many bytes, or an image declaring too many pixels",
    415: "the body cannot carry an image: send a multipart form or the image itself (image/*)",
    422: "a field is missing, misnamed, or has a bad value",
    503: "not ready yet, or the queue is full: retry after Retry-After seconds",
    504: "no answer within the request deadline",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries for these error statuses."""
    return {
        status: {
            "model": ValidationErrorResponse if status == 422 else ErrorResponse,
            "description": _ERROR_TEXT[status],
        }
        for status in (*statuses, 401)
    }


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": _BINARY}, "description": "a PNG image"}
}
_IMAGE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {media_type: _BINARY for media_type in ANSWER_TYPES},
        "description": "JSON, or the image alone as Accept asks",
    }
}

router = APIRouter()
log = logging.getLogger("service")


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _store(request: Request) -> ModelStore:
    store: ModelStore | None = request.app.state.store
    if store is None:
        raise Unavailable("the service is starting: models are loading")
    return store


def batched(endpoint: Endpoint) -> Endpoint:
    """Marks a route whose requests go through a batcher: ``service.middleware.ArrivalMiddleware`` then tells
    the batchers each such request is on its way the moment it arrives (``service.batcher.Arrivals``)."""
    endpoint.batched = True  # type: ignore[attr-defined]  # read by batched_paths
    return endpoint


def batched_paths(routes: list[BaseRoute]) -> tuple[frozenset[str], tuple[re.Pattern[str], ...]]:
    """The routes marked ``@batched``: the fixed paths (a set lookup per request) and the patterns of those
    with parameters in their path (``/v2/models/{name}/infer``)."""
    marked = [r for r in routes if isinstance(r, APIRoute) and getattr(r.endpoint, "batched", False)]
    return (
        frozenset(r.path for r in marked if not r.param_convertors),
        tuple(r.path_regex for r in marked if r.param_convertors),
    )


def _arrival(request: Request) -> ArrivalToken | None:
    token: ArrivalToken | None = request.scope.get(ARRIVAL_SCOPE_KEY)
    return token


def wanted_image(request: Request) -> str | None:
    """The image type ``Accept`` prefers to JSON, for the bare image: ``image/png``, ``image/jpeg`` or
    ``image/webp`` (``ANSWER_TYPES``), or ``image/*``, any image, a PNG (lossless, of any kind); None: JSON
    (``application/json``, ``*/*``, or no header). Ranked by q-value, then by place in the header (RFC 9110,
    12.5.1); q=0 refuses a type. Hand-written: Starlette has no Accept parser, and this is its whole use."""
    ranked = []
    for place, entry in enumerate(request.headers.get("accept", "").split(",")):
        media_type, *parameters = (part.strip() for part in entry.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0  # a q it cannot read: the type is left out, not a 500
        if quality > 0:
            ranked.append((-quality, place, media_type.lower()))
    for _, _, media_type in sorted(ranked):
        if media_type in ANSWER_TYPES:
            return media_type
        if media_type == "image/*":
            return "image/png"
        if media_type in ("application/json", "application/*", "*/*"):
            return None
    return None


# The X- headers an image answer may carry (CORS exposes them to a page on another origin: service.app).
ANSWER_HEADERS = (
    "X-Model",
    "X-Model-Reason",
    "X-Reconstruction-MSE",
    "X-Noise-Type",
    "X-Noise-Level",
    "X-Noise-Seed",
    "X-Noisy-PSNR-dB",
    "X-Denoised-PSNR-dB",
)


def noise_headers(spec: NoiseSpec | None) -> dict[str, str]:
    if spec is None:
        return {}
    return {"X-Noise-Type": spec.type, "X-Noise-Level": f"{spec.level:g}", "X-Noise-Seed": str(spec.seed)}


def ascii_header(text: str) -> str:
    """A header value in ASCII. Starlette sends headers as Latin-1 bytes, and a non-ASCII one ("a 60×50 image")
    is refused by clients that read headers as UTF-8 or ASCII (Starlette's TestClient raised on it)."""
    return text.replace("×", "x").encode("ascii", "replace").decode("ascii")


def image_headers(result: Denoised) -> dict[str, str]:
    """What the JSON body would say besides the image, for a client that asked for the image alone."""
    headers = {
        "X-Model": ascii_header(result.model),
        "X-Model-Reason": ascii_header(result.reason),
        "X-Reconstruction-MSE": f"{result.reconstruction_mse:.6g}",
    }
    headers.update(noise_headers(result.noise))
    if result.scores is not None:
        headers["X-Noisy-PSNR-dB"] = f"{result.scores.noisy_psnr_db:.4f}"
        headers["X-Denoised-PSNR-dB"] = f"{result.scores.denoised_psnr_db:.4f}"
    return headers


def json_body(result: Denoised) -> DenoiseResponse:
    """The JSON answer: PNGs in base64, and the errors against the clean image when the service added the noise."""
    response = DenoiseResponse(
        model=result.model,
        model_reason=result.reason,
        width=result.width,
        height=result.height,
        reconstruction_mse=result.reconstruction_mse,
        denoised_png=base64.b64encode(result.denoised_image).decode("ascii"),
        latency_ms=result.latency_ms,
    )
    if result.noise is not None and result.scores is not None:
        response.noise = NoiseInfo(type=result.noise.type, level=result.noise.level, seed=result.noise.seed)
        if result.noisy_png is not None:
            response.noisy_png = base64.b64encode(result.noisy_png).decode("ascii")
        response.noisy_mse, response.noisy_psnr_db = result.scores.noisy_mse, result.scores.noisy_psnr_db
        response.denoised_mse, response.denoised_psnr_db = result.scores.denoised_mse, result.scores.denoised_psnr_db
    return response


def _noise(noise: str | None, level: float | None, seed: int | None) -> NoiseRequest | None:
    return None if noise is None else NoiseRequest.choose(noise, level, seed)


@router.post(
    "/corrupt",
    response_class=Response,
    responses={**_PNG_RESPONSE, **errors(400, 413, 415, 422)},
    openapi_extra=form_body(CorruptForm),
    summary="Corrupt an image with a chosen noise",
)
async def corrupt(request: Request) -> Response:
    """The upload with noise applied, as a PNG of the upload's size. The same seed and image give the
    same bytes; the noise applied is echoed in the ``X-Noise-*`` headers."""
    form, (upload,) = await read_form(request, CorruptForm, max_files=1)
    noise = NoiseRequest.choose(form.noise, form.level, form.seed)
    png, spec = await corrupt_upload(upload.data, noise, _settings(request).max_image_pixels)
    return Response(png, media_type="image/png", headers=noise_headers(spec))


@router.post(
    "/denoise",
    response_model=DenoiseResponse,
    response_model_exclude_none=True,
    responses={**_IMAGE_RESPONSE, **errors(400, 404, 413, 415, 422, 503, 504)},
    openapi_extra=form_body(DenoiseForm),
    summary="Denoise an image (optionally corrupting it first)",
)
@batched
async def denoise(request: Request) -> Response | DenoiseResponse:
    """The model's output as JSON (PNG in base64, errors), or with ``Accept: image/png`` the PNG alone with
    its reconstruction error in ``X-Reconstruction-MSE`` (``image/jpeg`` or ``image/webp``: a smaller, lossy
    file, quality 95, 8 bits; JPEG has no alpha). With ``noise`` the upload is taken as clean,
    corrupted first, and the PSNR of the noisy and the denoised image against it is reported."""
    form, (upload,) = await read_form(request, DenoiseForm, max_files=1)
    answer_type = wanted_image(request)
    noise = _noise(form.noise, form.level, form.seed)
    result = await _store(request).denoise_upload(form.model, upload.data, noise, _arrival(request), answer_type)
    if answer_type is not None:
        return Response(result.denoised_image, media_type=answer_type, headers=image_headers(result))
    return json_body(result)


def _batch_item(index: int, filename: str | None, outcome: Denoised | ServiceError) -> BatchItem:
    if isinstance(outcome, Denoised):
        return BatchItem(filename=filename, status_code=200, result=json_body(outcome))
    if outcome.status_code == 500:  # the service's fault on this item (a model that raised): the others were answered
        log.error("/denoise/batch item %d failed: %s", index, outcome.detail)
    return BatchItem(filename=filename, status_code=outcome.status_code, detail=outcome.detail)


@router.post(
    "/denoise/batch",
    response_model=BatchResponse,
    response_model_exclude_none=True,
    responses=errors(400, 404, 413, 415, 422, 503),
    openapi_extra=form_body(DenoiseBatchForm),
    summary="Denoise several images in one request",
)
@batched
async def denoise_batch(request: Request) -> BatchResponse:
    """Several ``file`` fields, the same options for all; one result per file in upload order. An image
    that fails carries its own ``status_code`` and ``detail`` while the others are answered. With a
    ``seed``, image i is corrupted with seed + i."""
    settings = _settings(request)
    # One file past the limit is still parsed, so that the answer can say what the limit is.
    form, uploads = await read_form(request, DenoiseBatchForm, max_files=settings.max_batch_files + 1)
    store = _store(request)
    if form.model is not None:
        store.get(form.model)  # an unknown model is the first thing to say
    if len(uploads) > settings.max_batch_files:
        raise InvalidField(
            f"file: more than {settings.max_batch_files} images; send at most "
            f"{settings.max_batch_files} per request (DAE_MAX_BATCH_FILES)"
        )
    noises = NoiseRequest.for_batch(len(uploads), form.noise, form.level, form.seed)
    outcomes = await store.denoise_uploads(form.model, [upload.data for upload in uploads], noises, _arrival(request))
    return BatchResponse(
        results=[
            _batch_item(index, upload.filename, outcome)
            for index, (upload, outcome) in enumerate(zip(uploads, outcomes, strict=True))
        ]
    )


@router.get("/noises", response_model=NoisesResponse, summary="The noise types the service applies")
async def list_noises() -> NoisesResponse:
    return NoisesResponse(
        noises=[
            NoiseInfoEntry(
                name=noise.name,
                label=noise.label,
                level_means=noise.level_means,
                default_level=noise.default_level,
                photo_level=noise.photo_level,
            )
            for noise in NOISES.values()
        ]
    )


@router.get("/models", response_model=ModelsResponse, responses=errors(503), summary="The loaded models")
async def list_models(request: Request) -> ModelsResponse:
    store = _store(request)
    models = [
        ModelInfo(
            name=denoiser.name,
            architecture=denoiser.card.architecture,
            parameters=denoiser.card.parameters,
            input_size=denoiser.card.input_size,
            dataset=denoiser.card.dataset,
            noise=denoiser.card.noise,
            noise_level=denoiser.card.noise_level,
            epochs=denoiser.card.epochs,
            hyperparameters=denoiser.card.hyperparameters,
            test_metrics=denoiser.card.test_metrics,
            inference_dtype=dtype_name(denoiser.placement.dtype),
            inference_backend=denoiser.placement.backend,
            default=denoiser.name == store.default_name,
        )
        for denoiser in store.denoisers.values()
    ]
    return ModelsResponse(default_model=store.default_name, models=models)


@router.get("/healthz", response_model=Health, summary="200 while the process runs")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses=errors(503), summary="200 once every model is warmed up")
async def readyz(request: Request) -> Readiness:
    store = _store(request)
    if not store.ready:
        raise Unavailable(f"not ready: {store.not_ready_reason}")
    return Readiness(status="ready", models=list(store.denoisers))


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    summary="Prometheus metrics of every worker",
)
def prometheus_metrics() -> Response:
    # A plain def: FastAPI runs it in the thread pool, as reading every worker's files takes a moment.
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


@router.get("/", include_in_schema=False)
async def demo_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")
