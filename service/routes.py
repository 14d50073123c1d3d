"""The HTTP routes: each reads its fields, calls ``service.pipeline`` and shapes the answer; no logic here."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from models.device import dtype_name
from models.metrics import psnr_db_from_mse
from service import metrics, pipeline
from service.batcher import ArrivalToken
from service.errors import InvalidField, Unavailable
from service.forms import Upload, form_body, read_form
from service.images import check_upload_size
from service.middleware import ARRIVAL_SCOPE_KEY
from service.pipeline import Denoised, NoiseSpec
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
    Readiness,
    ValidationErrorResponse,
)
from service.settings import Settings

STATIC_DIR = Path(__file__).parent / "static"
BATCHING_PATHS = frozenset({"/denoise", "/denoise/batch"})

_ERROR_TEXT = {
    400: "the upload is empty, not an image, or corrupt",
    401: "the API key is missing or wrong (only when DAE_API_KEY is set)",
    404: "no model by that name",
    413: "too many bytes, or an image declaring too many pixels",
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


_PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}, "description": "a PNG image"}
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


def _arrival(request: Request) -> ArrivalToken | None:
    token: ArrivalToken | None = request.scope.get(ARRIVAL_SCOPE_KEY)
    return token


def wants_png(request: Request) -> bool:
    """``Accept: image/png`` (ranked before any JSON in the header) asks for the bare PNG."""
    accept = request.headers.get("accept", "")
    png_at = accept.find("image/png")
    if png_at < 0:
        return False
    json_at = accept.find("application/json")
    return json_at < 0 or png_at < json_at


def noise_headers(spec: NoiseSpec | None) -> dict[str, str]:
    if spec is None:
        return {}
    return {"X-Noise-Type": spec.type, "X-Noise-Level": f"{spec.level:g}", "X-Noise-Seed": str(spec.seed)}


def png_headers(result: Denoised) -> dict[str, str]:
    """What the JSON body would say besides the image, for a client that asked for the PNG alone."""
    headers = {"X-Model": result.model, "X-Reconstruction-MSE": f"{result.prediction.reconstruction_mse:.6g}"}
    headers.update(noise_headers(result.noise))
    scores = result.scores()
    if scores is not None:
        headers["X-Noisy-PSNR-dB"] = f"{psnr_db_from_mse(scores[0]):.4f}"
        headers["X-Denoised-PSNR-dB"] = f"{psnr_db_from_mse(scores[1]):.4f}"
    return headers


def _check_size(uploads: list[Upload], settings: Settings) -> list[bytes]:
    check_upload_size(sum(len(upload.data) for upload in uploads), settings.max_upload_bytes)
    return [upload.data for upload in uploads]


@router.post(
    "/corrupt",
    response_class=Response,
    responses={**_PNG_RESPONSE, **errors(400, 413, 422)},
    openapi_extra=form_body(CorruptForm),
    summary="Corrupt an image with a chosen noise",
)
async def corrupt(request: Request) -> Response:
    """The upload with noise applied, as a PNG of the upload's size. The same seed and image give the
    same bytes; the noise applied is echoed in the ``X-Noise-*`` headers."""
    settings = _settings(request)
    form, uploads = await read_form(request, CorruptForm, max_files=1)
    (data,) = _check_size(uploads, settings)
    spec = NoiseSpec.choose(form.noise, form.level, form.seed)
    png, _, _ = await pipeline.corrupt_upload(data, spec, settings.max_image_pixels)
    return Response(png, media_type="image/png", headers=noise_headers(spec))


@router.post(
    "/denoise",
    response_model=DenoiseResponse,
    response_model_exclude_none=True,
    responses={**_PNG_RESPONSE, **errors(400, 404, 413, 422, 503, 504)},
    openapi_extra=form_body(DenoiseForm),
    summary="Denoise an image (optionally corrupting it first)",
)
async def denoise(request: Request) -> Response | DenoiseResponse:
    """The model's output as JSON (PNG in base64, errors), or with ``Accept: image/png`` the PNG alone with
    its reconstruction error in ``X-Reconstruction-MSE``. With ``noise`` the upload is taken as clean,
    corrupted first, and the PSNR of the noisy and the denoised image against it is reported."""
    settings = _settings(request)
    form, uploads = await read_form(request, DenoiseForm, max_files=1)
    entry = _store(request).get(form.model)
    (data,) = _check_size(uploads, settings)
    spec = None if form.noise is None else NoiseSpec.choose(form.noise, form.level, form.seed)
    result = await pipeline.denoise_upload(data, entry, spec, settings.max_image_pixels, _arrival(request))
    if wants_png(request):
        return Response(await result.png(), media_type="image/png", headers=png_headers(result))
    return await result.response()


async def _batch_item(index: int, filename: str | None, outcome: Denoised | Exception) -> BatchItem:
    if isinstance(outcome, Denoised):
        return BatchItem(filename=filename, status_code=200, result=await outcome.response())
    status = getattr(outcome, "status_code", 500)
    if status == 500:  # the service's fault on this item (a model that raised): the others were answered
        log.error("/denoise/batch item %d failed: %s", index, getattr(outcome, "detail", outcome))
    return BatchItem(filename=filename, status_code=status, detail=getattr(outcome, "detail", str(outcome)))


@router.post(
    "/denoise/batch",
    response_model=BatchResponse,
    response_model_exclude_none=True,
    responses=errors(400, 404, 413, 422, 503),
    openapi_extra=form_body(DenoiseBatchForm),
    summary="Denoise several images in one request",
)
async def denoise_batch(request: Request) -> BatchResponse:
    """Several ``file`` fields, the same options for all; one result per file in upload order. An image
    that fails carries its own ``status_code`` and ``detail`` while the others are answered. With a
    ``seed``, image i is corrupted with seed + i."""
    settings = _settings(request)
    # One file past the limit is still parsed, so that the answer can say what the limit is.
    form, uploads = await read_form(request, DenoiseBatchForm, max_files=settings.max_batch_files + 1)
    entry = _store(request).get(form.model)
    if len(uploads) > settings.max_batch_files:
        raise InvalidField(
            f"file: more than {settings.max_batch_files} images; send at most "
            f"{settings.max_batch_files} per request (DAE_MAX_BATCH_FILES)"
        )
    datas = _check_size(uploads, settings)
    specs = pipeline.batch_noise_specs(len(datas), form.noise, form.level, form.seed)
    outcomes = await pipeline.denoise_uploads(datas, entry, specs, settings.max_image_pixels, _arrival(request))
    return BatchResponse(
        results=[
            await _batch_item(index, upload.filename, outcome)
            for index, (upload, outcome) in enumerate(zip(uploads, outcomes, strict=True))
        ]
    )


@router.get("/models", response_model=ModelsResponse, responses=errors(503), summary="The loaded models")
async def list_models(request: Request) -> ModelsResponse:
    store = _store(request)
    models = [
        ModelInfo(
            name=entry.name,
            architecture=entry.card.architecture,
            parameters=entry.card.parameters,
            input_size=entry.card.input_size,
            dataset=entry.card.dataset,
            noise=entry.card.noise,
            noise_level=entry.card.noise_level,
            epochs=entry.card.epochs,
            hyperparameters=entry.card.hyperparameters,
            test_metrics=entry.card.test_metrics,
            inference_dtype=dtype_name(entry.runner.dtype),
            inference_backend=entry.runner.backend,
            default=entry.name == store.default_name,
        )
        for entry in store.models.values()
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
    return Readiness(status="ready", models=list(store.models))


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
