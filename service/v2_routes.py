"""The Open Inference Protocol's REST routes (``/v2``), thin over ``service.v2``, and its error shape.

Each route finds the model, lets ``service.v2`` read the request and write the answer, and lets errors
rise as ``service.errors`` exceptions, answered by the app's handler as everywhere else.
``ProtocolErrorMiddleware`` then gives every error answer under ``/v2`` the protocol's ``{"error": ...}``,
whichever layer wrote it: the routes, FastAPI (404, 405), the API key check (401) or the body limit (413).
It keeps ``detail`` beside ``error``, the one key every error of the service carries.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from service import v2
from service.batcher import ArrivalToken
from service.denoiser import Denoiser
from service.errors import ClientGone, TooLarge, Unavailable, UnknownModel
from service.images import run_sized
from service.middleware import ARRIVAL_SCOPE_KEY, ASGIApp, Message, Receive, Scope, Send
from service.registry import ModelStore
from service.routes import batched
from service.settings import Settings

PREFIX = "/v2"
router = APIRouter(tags=["Open Inference Protocol (KServe v2)"])


class ProtocolError(BaseModel):
    error: str = Field(description="what went wrong and what to change", examples=["no model named 'x'; loaded: ..."])
    detail: str = Field(
        description="the same text, under the key the service's other routes use",
        examples=["no model named 'x'; loaded: ..."],
    )


class ServerMetadata(BaseModel):
    name: str = Field(examples=[v2.SERVER_NAME])
    version: str = Field(examples=["0.1.0"])
    extensions: list[str] = Field(examples=[list(v2.EXTENSIONS)])


class Live(BaseModel):
    live: bool = Field(examples=[True])


class Ready(BaseModel):
    ready: bool = Field(examples=[True])


class ModelReady(BaseModel):
    name: str = Field(examples=["conv-blind"])
    ready: bool = Field(examples=[True])


class TensorMetadata(BaseModel):
    name: str = Field(examples=[v2.INPUT])
    datatype: str = Field(examples=["FP32"])
    shape: list[int] = Field(description="-1: any", examples=[[-1, -1, -1, -1]])
    parameters: dict[str, str] = Field(
        description="what the tensor means, in words", examples=[{"description": "N grey images of any size"}]
    )


class ModelMetadata(BaseModel):
    name: str = Field(examples=["conv-blind"])
    versions: list[str] = Field(examples=[[v2.MODEL_VERSION]])
    platform: str = Field(examples=[v2.PLATFORM])
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class OutputTensor(BaseModel):
    name: str = Field(examples=[v2.DENOISED])
    datatype: str = Field(examples=["UINT8"])
    shape: list[int] = Field(examples=[[1, 1, 28, 28]])
    parameters: dict[str, int] | None = Field(
        default=None, description="binary_data_size, for binary data", examples=[{"binary_data_size": 784}]
    )
    data: list[float] | None = Field(
        default=None, description="the values, flat in row-major order (JSON form)", examples=[[0, 12, 255]]
    )


class InferResponse(BaseModel):
    model_name: str = Field(examples=["conv-blind"])
    model_version: str = Field(examples=[v2.MODEL_VERSION])
    id: str | None = Field(default=None, description="the request's id, when it had one", examples=["request-1"])
    outputs: list[OutputTensor]


_ERRORS = {
    400: "not JSON, or a tensor that does not fit the model: unknown name, wrong shape, datatype, size or values",
    401: "the API key is missing or wrong (only when DAE_API_KEY is set)",
    404: "no model by that name, or no such version (the service has version 1)",
    413: "too many bytes, too many pixels per image, or too many images (DAE_MAX_* settings)",
    503: "not ready yet, or the queue is full: retry after Retry-After seconds",
    504: "no answer within the request deadline",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries for these statuses, and ``4XX`` for the rest: every error here has the
    protocol's shape (and FastAPI, seeing a 4XX entry, does not add a 422 that a path of strings cannot get)."""
    documented: dict[int | str, dict[str, Any]] = {
        status: {"model": ProtocolError, "description": _ERRORS[status]} for status in (*statuses, 401)
    }
    documented["4XX"] = {"model": ProtocolError, "description": "any other client error (404 route, 405 method)"}
    return documented


def _inline(schema: Any, definitions: dict[str, Any]) -> Any:
    """The schema with its ``$defs`` references written out, as a request body in OpenAPI needs."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline(definitions[schema["$ref"].rsplit("/", 1)[-1]], definitions)
        return {key: _inline(value, definitions) for key, value in schema.items() if key != "$defs"}
    if isinstance(schema, list):
        return [_inline(item, definitions) for item in schema]
    return schema


_REQUEST_SCHEMA = v2.InferRequest.model_json_schema()
_INFER_BODY: dict[str, Any] = {
    "parameters": [
        {
            "name": v2.HEADER_LENGTH,
            "in": "header",
            "required": False,
            "schema": {"type": "integer", "minimum": 1},
            "description": "binary form: the byte length of the JSON at the start of the body",
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline(_REQUEST_SCHEMA, _REQUEST_SCHEMA.get("$defs", {}))},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "binary tensor data: the JSON request, then each input's binary_data_size bytes",
            },
        },
    },
}
_INFER_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "model": InferResponse,
        "description": "JSON; with binary outputs, the JSON (Inference-Header-Content-Length bytes), then the data",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _store(request: Request) -> ModelStore:
    store: ModelStore | None = request.app.state.store
    if store is None:
        raise Unavailable("the service is starting: models are loading")
    return store


def _model(request: Request, name: str, version: str | None) -> Denoiser:
    """The model, known whether or not warm-up has finished (404 for an unknown name or version)."""
    store = _store(request)
    denoiser = store.denoisers.get(name)
    if denoiser is None:
        raise UnknownModel(f"no model named {name!r}; loaded: {', '.join(store.denoisers)}")
    v2.check_version(name, version)
    return denoiser


def _ready(store: ModelStore) -> None:
    """The rule of /readyz: every model loaded and warmed up."""
    if not store.ready:
        raise Unavailable(f"not ready: {store.not_ready_reason}")


@router.get("/v2", response_model=ServerMetadata, responses=errors(), summary="Server metadata")
async def server_metadata(request: Request) -> dict[str, Any]:
    return v2.server_metadata(request.app.version)


@router.get("/v2/health/live", response_model=Live, summary="200 while the process runs")
async def server_live() -> Live:
    return Live(live=True)


@router.get("/v2/health/ready", response_model=Ready, responses=errors(503), summary="200 once every model is warm")
async def server_ready(request: Request) -> Ready:
    _ready(_store(request))
    return Ready(ready=True)


_METADATA: dict[str, Any] = {
    "response_model": ModelMetadata,
    "responses": errors(404, 503),
    "summary": "Model metadata",
}
_MODEL_READY: dict[str, Any] = {
    "response_model": ModelReady,
    "responses": errors(404, 503),
    "summary": "Model readiness",
}


@router.get("/v2/models/{name}", **_METADATA)
async def model_metadata(request: Request, name: str) -> dict[str, Any]:
    """The input ``images`` ([N, C, H, W]; -1: any) and the outputs ``denoised`` and ``reconstruction_mse``."""
    return v2.model_metadata(_model(request, name, None))


@router.get("/v2/models/{name}/versions/{version}", **_METADATA)
async def model_version_metadata(request: Request, name: str, version: str) -> dict[str, Any]:
    return v2.model_metadata(_model(request, name, version))


def _model_ready(request: Request, name: str, version: str | None) -> ModelReady:
    denoiser = _model(request, name, version)
    _ready(_store(request))
    return ModelReady(name=denoiser.name, ready=True)


@router.get("/v2/models/{name}/ready", **_MODEL_READY)
async def model_ready(request: Request, name: str) -> ModelReady:
    return _model_ready(request, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready", **_MODEL_READY)
async def model_version_ready(request: Request, name: str, version: str) -> ModelReady:
    return _model_ready(request, name, version)


def inflate(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """The body without its Content-Encoding (gzip or deflate, as tritonclient can compress it), never more
    than ``max_bytes``: a small compressed body must not become gigabytes here."""
    kind = (encoding or "").strip().lower()
    if kind in ("", "identity"):
        return body
    if kind not in ("gzip", "deflate"):
        raise v2.BadRequest(f"Content-Encoding {encoding!r} is not supported: send gzip, deflate or none")
    inflater = zlib.decompressobj(zlib.MAX_WBITS | (16 if kind == "gzip" else 0))
    try:
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise v2.BadRequest(f"the body is not valid {kind} data ({exc})") from None
    if len(data) > max_bytes:
        raise TooLarge(f"the body inflates past the limit of {max_bytes} bytes (DAE_MAX_UPLOAD_BYTES)")
    if not inflater.eof:
        raise v2.BadRequest(f"the {kind} body is cut short")
    return data


async def _infer(request: Request, name: str, version: str | None) -> Response:
    settings: Settings = request.app.state.settings
    arrival: ArrivalToken | None = request.scope.get(ARRIVAL_SCOPE_KEY)  # announced by ArrivalMiddleware
    denoiser = _model(request, name, version)
    _ready(_store(request))
    try:
        body = await request.body()
    except ClientDisconnect:
        raise ClientGone("the client went away before sending the whole body") from None
    encoding = request.headers.get("content-encoding")
    if encoding is not None:  # inflating megabytes takes milliseconds: not on the event loop
        body = await anyio.to_thread.run_sync(inflate, body, encoding, settings.max_upload_bytes)
    limits = v2.Limits(settings.max_image_pixels, settings.max_batch_files)
    header = request.headers.get(v2.HEADER_LENGTH)
    decoded = await run_sized(
        len(body), v2.decode_request, body, header, denoiser.input_size, limits, inline_max=v2.INLINE_MAX_BYTES
    )
    outputs = await v2.predict(denoiser, decoded.images, arrival)
    answer = await run_sized(
        v2.json_bytes(decoded), v2.encode_response, denoiser.name, decoded, outputs, inline_max=v2.INLINE_MAX_BYTES
    )
    content, header_length = answer
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream", headers={v2.HEADER_LENGTH: str(header_length)})


_INFER_DOC = """Denoise a batch of images, tensor ``images`` [N, C, H, W] (C 1 grey, or 3 R, G, B planes for a
model of any size; ``FP32`` in [0, 1], ``UINT8`` 0..255 or ``UINT16`` 0..65535), as JSON (``data``: flat
row-major) or with the binary tensor data extension (the JSON first, its length in
``Inference-Header-Content-Length``, then each input's ``binary_data_size`` bytes). Outputs: ``denoised``
(the input's shape and datatype) and ``reconstruction_mse`` (FP32 [N]: per image, the MSE between the model's
input and output, as /denoise reports). Each image goes through the model's batcher with every other
request's images; the answer equals /denoise's for the same image."""
_INFER: dict[str, Any] = {
    "response_class": Response,
    "responses": {**_INFER_ANSWER, **errors(400, 404, 413, 503, 504)},
    "openapi_extra": _INFER_BODY,
    "description": _INFER_DOC,
}


@router.post(
    "/v2/models/{name}/infer",
    summary="Inference",
    **_INFER,
)
@batched
async def infer(request: Request, name: str) -> Response:
    return await _infer(request, name, None)


@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    summary="Inference (a version named)",
    **_INFER,
)
@batched
async def infer_version(request: Request, name: str, version: str) -> Response:
    return await _infer(request, name, version)


def _with_error_key(body: bytes) -> bytes:
    """``{"detail": text, ...}`` → ``{"error": text, "detail": text, ...}``; anything else unchanged."""
    try:
        document = json.loads(body)
    except ValueError:
        return body
    if not isinstance(document, dict) or "error" in document or not isinstance(document.get("detail"), str):
        return body
    return json.dumps({"error": document["detail"], **document}).encode()


class ProtocolErrorMiddleware:
    """Gives error answers (JSON, status ≥ 400) under ``/v2`` the protocol's ``error`` key; the outermost layer,
    so that every other layer's errors pass through it. Other paths pass straight through."""

    def __init__(self, app: ASGIApp, prefix: str = PREFIX) -> None:
        self.app = app
        self.prefix = prefix

    def _covers(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        return scope["type"] == "http" and (path == self.prefix or path.startswith(self.prefix + "/"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._covers(scope):
            await self.app(scope, receive, send)
            return
        held: Message | None = None  # an error's start, held until its body is rewritten
        chunks: list[bytes] = []

        async def send_in_protocol(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400:
                headers = list(message.get("headers", ()))
                if any(k == b"content-type" and v.startswith(b"application/json") for k, v in headers):
                    held = {**message, "headers": headers}
                    return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = _with_error_key(b"".join(chunks))
            headers = [(k, v) for k, v in held["headers"] if k != b"content-length"]
            await send({**held, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_in_protocol)
