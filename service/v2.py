"""The Open Inference Protocol (KServe v2, REST) over the service's models: metadata, request and answer.

No HTTP here: ``service.v2_routes`` hands in the body bytes and two header values, and gets back bytes
(and the JSON header's length for the binary form). Errors are ``service.errors`` exceptions carrying
their status; the routes' error layer turns them into the protocol's ``{"error": ...}``.

The wire format, per model:

- input ``images``: a batch of images, shape ``[N, C, H, W]``. ``UINT8`` (0..255, as in a PNG), ``UINT16``
  (0..65535, as in a 16-bit PNG) or ``FP32`` (values in [0, 1]); all accepted, ``FP32`` is the one the
  metadata declares. A fixed-size
  model (the MLPs) takes grey images of its size, ``[-1, 1, 28, 28]``; the others take any size, grey
  (``C`` 1) or colour (``C`` 3, R, G, B planes: denoised as ``/denoise`` denoises a colour upload, in colour
  by a photo model), ``[-1, -1, -1, -1]``. Image models served by Triton take colour as planes, NCHW.
- output ``denoised``: the model's output, same shape and datatype as the input (``UINT8`` and ``UINT16``
  rounded to nearest, exactly as ``/denoise`` writes its 8-bit and 16-bit PNGs).
- output ``reconstruction_mse``: ``FP32 [N]``, per image the MSE between the model's input and its output
  in [0, 1] units, before rounding: the ``reconstruction_mse`` that ``/denoise`` reports.

JSON tensors (``data``: flat, row-major) and Triton's binary tensor data extension (the JSON is the first
``Inference-Header-Content-Length`` bytes, then each input's ``binary_data_size`` bytes, little-endian;
outputs asked with ``binary_data`` come back so) are both read and written; tritonclient uses binary.

Statuses: 400 for anything malformed (not JSON, a missing or unknown tensor, a wrong shape, datatype,
size or value), as Triton answers an invalid argument; 413 for the service's size limits (bytes, pixels
per image, images per request), as for uploads; 404 for an unknown model or version.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, WithJsonSchema

from service.batcher import ArrivalToken
from service.denoiser import Denoiser, Output, Prepared
from service.encoding import quantize, quantize16
from service.errors import ServiceError, TooLarge, UnknownModel
from service.images import Picture
from service.inference import Prediction

INPUT = "images"
DENOISED = "denoised"
MSE = "reconstruction_mse"
OUTPUTS = (DENOISED, MSE)
MODEL_VERSION = "1"  # the service serves one version of each model: the checkpoint it loaded
PLATFORM = "pytorch"
SERVER_NAME = "dae-service"
EXTENSIONS = ("binary_tensor_data",)
# Each datatype's little-endian numpy type; the integer ones are pixels of their full range, rounded on the way
# out as /denoise rounds the PNG it writes.
DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2")}
QUANTIZE = {"UINT8": quantize, "UINT16": quantize16}
DATATYPES = tuple(DTYPES)
ACCEPTED = "FP32 (values in [0, 1]), UINT8 (0..255) or UINT16 (0..65535)"
HEADER_LENGTH = "Inference-Header-Content-Length"
# Bodies (and answers) up to this size are parsed (written) on the event loop: a digit's JSON takes well under
# a millisecond. Larger ones go to a worker thread, where megabytes of JSON numbers cannot stall other requests.
INLINE_MAX_BYTES = 64 * 1024
T = TypeVar("T")


class BadRequest(ServiceError):
    """An infer request that does not follow the protocol or the model's metadata (400, as in Triton)."""

    status_code = 400


# ---- metadata ---------------------------------------------------------------------------------------------


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": version, "extensions": list(EXTENSIONS)}


def check_version(name: str, version: str | None) -> None:
    """404 for any version but the one served (``MODEL_VERSION``)."""
    if version is not None and version != MODEL_VERSION:
        raise UnknownModel(f"model {name!r} has no version {version!r}; versions: {MODEL_VERSION}")


def _tensor_metadata(name: str, shape: list[int], description: str, **more: str) -> dict[str, Any]:
    # The protocol's tensor metadata is name, datatype and shape; the parameters say in words what they mean.
    return {"name": name, "datatype": "FP32", "shape": shape, "parameters": {**more, "description": description}}


def model_metadata(denoiser: Denoiser) -> dict[str, Any]:
    size = denoiser.input_size  # (height, width), or None for a model of any size
    if size is None:
        images, what = [-1, -1, -1, -1], "N images of any size, grey (C 1) or colour (C 3: R, G, B planes)"
    else:
        images, what = [-1, 1, *size], f"N grey images {size[0]}×{size[1]}"
    return {
        "name": denoiser.name,
        "versions": [MODEL_VERSION],
        "platform": PLATFORM,
        "inputs": [
            _tensor_metadata(
                INPUT,
                images,
                f"{what}: FP32 in [0, 1], or UINT8 0..255 or UINT16 0..65535 as in an 8-bit or 16-bit PNG",
                accepted_datatypes=",".join(DATATYPES),
            )
        ],
        "outputs": [
            _tensor_metadata(DENOISED, images, "the denoised images, in the input's datatype (UINT8, UINT16: rounded)"),
            _tensor_metadata(
                MSE,
                [-1],
                "per image, the MSE between the model's input and its output in [0, 1] units, before rounding "
                "(the reconstruction_mse of /denoise)",
            ),
        ],
    }


# ---- the request ------------------------------------------------------------------------------------------

_LENIENT = ConfigDict(extra="ignore")  # fields the protocol (or a client's extension) has and we do not use
Dimension = Annotated[int, Strict(), Field(ge=0)]  # strict: true and "28" are not sizes
_DATA_SCHEMA = {
    "type": "array",
    "items": {"type": "number"},
    "description": "the tensor's values, flat in row-major order; left out when sent as binary data",
}


class InputTensor(BaseModel):
    model_config = _LENIENT

    name: str = Field(description=f"'{INPUT}'", examples=[INPUT])
    shape: list[Dimension] = Field(description="[N, C, H, W], C 1 or 3", examples=[[1, 1, 28, 28]])
    datatype: str = Field(description=ACCEPTED, examples=["UINT8"])
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="binary_data_size: bytes of this tensor after the JSON header"
    )
    # Any, not list[float]: validating a million numbers one by one costs more than numpy's conversion.
    data: Annotated[Any, WithJsonSchema(_DATA_SCHEMA)] = None


class RequestedOutput(BaseModel):
    model_config = _LENIENT

    name: str = Field(description=f"'{DENOISED}' or '{MSE}'", examples=[DENOISED])
    parameters: dict[str, Any] = Field(default_factory=dict, description="binary_data: true for binary data")


class InferRequest(BaseModel):
    """The JSON of an infer request (the whole body, or its first Inference-Header-Content-Length bytes)."""

    model_config = _LENIENT

    id: str | None = Field(default=None, description="echoed in the answer")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="binary_data_output: true for every output as binary data"
    )
    inputs: list[InputTensor] = Field(min_length=1, description=f"one tensor, '{INPUT}'")
    outputs: list[RequestedOutput] | None = Field(default=None, description="which outputs, and how; all when left out")


@dataclass(frozen=True)
class Limits:
    max_pixels: int  # per image (DAE_MAX_IMAGE_PIXELS)
    max_images: int  # per request (DAE_MAX_BATCH_FILES)


@dataclass(frozen=True)
class Decoded:
    """An infer request ready for the model: N×C×H×W float32 images in [0, 1] and how to answer."""

    images: np.ndarray
    datatype: str
    outputs: list[tuple[str, bool]]  # (name, as binary data) in the order asked
    id: str | None


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary data after it)."""
    if header_length is None:
        return body, b""
    text = header_length.strip()
    # ASCII digits, and few of them: int() refuses other Unicode digits and numbers past 4300 digits.
    if not (text.isascii() and text.isdigit() and len(text) <= 18) or not 0 < int(text) <= len(body):
        raise BadRequest(
            f"{HEADER_LENGTH} is {header_length!r}: it must be the byte length of the JSON at the start of the "
            f"body (1..{len(body)})"
        )
    return body[: int(text)], body[int(text) :]


def _readable(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors(include_url=False)
    )


def _parse_json(header: bytes) -> InferRequest:
    try:
        document = json.loads(header)
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested past the parser's depth
        raise BadRequest(f"the request is not valid JSON ({type(exc).__name__}: {exc})") from None
    try:
        return InferRequest.model_validate(document)
    except ValidationError as exc:
        raise BadRequest(f"the request does not follow the protocol: {_readable(exc)}") from None


def _bool_parameter(parameters: dict[str, Any], key: str, where: str) -> bool | None:
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"{where}: parameter {key} must be true or false, not {value!r}")
    return value


def _check_shape(tensor: InputTensor, size: tuple[int, int] | None, limits: Limits) -> tuple[int, int, int, int]:
    """(N, C, H, W) of a shape that suits the model and the limits."""
    if size is None:
        expected, kinds = "[N, C, H, W]", "N ≥ 1 images, grey (C 1) or colour (C 3, R, G, B planes),"
    else:
        expected, kinds = f"[N, 1, {size[0]}, {size[1]}]", "N ≥ 1 grey images (one channel)"
    shape = tensor.shape
    if len(shape) != 4 or shape[1] not in ((1, 3) if size is None else (1,)) or min(shape) < 1:
        raise BadRequest(f"input {INPUT!r} has shape {shape}: send {expected}, {kinds} of at least 1×1")
    n, channels, height, width = shape
    if size is not None and (height, width) != size:
        raise BadRequest(
            f"input {INPUT!r} has shape {shape}: this model takes {size[0]}×{size[1]} images, {expected} "
            "(resize them first, or use a model of any size)"
        )
    if height * width > limits.max_pixels:
        raise TooLarge(
            f"input {INPUT!r}: each image is {width}×{height} = {height * width} pixels; the limit is "
            f"{limits.max_pixels} (DAE_MAX_IMAGE_PIXELS)"
        )
    if n > limits.max_images:
        raise TooLarge(f"input {INPUT!r} holds {n} images; send at most {limits.max_images} (DAE_MAX_BATCH_FILES)")
    return n, channels, height, width


def _from_json(data: Any, count: int) -> np.ndarray:
    if not isinstance(data, list):
        raise BadRequest(f"input {INPUT!r}: data must be a list of numbers (flat, row-major)")
    try:
        values = np.asarray(data)
    except (ValueError, TypeError, OverflowError, RecursionError):  # ragged nesting, mixed kinds
        raise BadRequest(f"input {INPUT!r}: data must be a flat list of numbers") from None
    if values.dtype.kind not in "iuf":  # strings, objects, null, booleans
        raise BadRequest(f"input {INPUT!r}: data must hold numbers only (found {values.dtype.kind!r} values)")
    if values.size != count:
        raise BadRequest(f"input {INPUT!r}: data has {values.size} values where its shape needs {count}")
    return values.reshape(-1)


def _from_binary(raw: bytes, datatype: str, count: int) -> np.ndarray:
    dtype = DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(
            f"input {INPUT!r}: binary_data_size is {len(raw)} bytes where its shape and {datatype} need "
            f"{count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype)


def _to_unit(values: np.ndarray, datatype: str) -> np.ndarray:
    """Values → float32 in [0, 1], as ``service.images.to_picture`` scales a PNG's (so UINT8 and UINT16 match
    /denoise with an 8-bit and a 16-bit PNG)."""
    if datatype in QUANTIZE:
        dtype = DTYPES[datatype]
        top = int(np.iinfo(dtype).max)
        if values.dtype != dtype:  # from JSON: integers in range, nothing else
            if values.size and (not np.all(np.mod(values, 1) == 0) or values.min() < 0 or values.max() > top):
                raise BadRequest(f"input {INPUT!r}: {datatype} values must be whole numbers in 0..{top}")
            values = values.astype(dtype)
        return values.astype(np.float32) * np.float32(1 / top)
    unit = values.astype(np.float32)  # a copy: the images live on after the body's bytes are dropped
    if unit.size and (not np.isfinite(unit).all() or unit.min() < 0.0 or unit.max() > 1.0):
        raise BadRequest(
            f"input {INPUT!r}: FP32 values must be finite and in [0, 1] (0 black, 1 white); scale 8-bit pixels "
            "by 1/255, or send them as UINT8"
        )
    return unit


def _requested_outputs(request: InferRequest) -> list[tuple[str, bool]]:
    default = _bool_parameter(request.parameters, "binary_data_output", "request") or False
    if request.outputs is None:
        return [(name, default) for name in OUTPUTS]
    chosen = []
    for output in request.outputs:
        if output.name not in OUTPUTS:
            raise BadRequest(f"unknown output {output.name!r}: this model has {DENOISED!r} and {MSE!r}")
        if any(key in output.parameters for key in ("classification", "shared_memory_region")):
            raise BadRequest(f"output {output.name!r}: classification and shared memory are not supported")
        binary = _bool_parameter(output.parameters, "binary_data", f"output {output.name!r}")
        chosen.append((output.name, default if binary is None else binary))
    if len({name for name, _ in chosen}) != len(chosen):
        raise BadRequest("an output is asked for twice")
    return chosen


def decode_request(body: bytes, header_length: str | None, size: tuple[int, int] | None, limits: Limits) -> Decoded:
    """Parse and check an infer request for a model taking ``size`` images (None: any size)."""
    header, binary = _split(body, header_length)
    request = _parse_json(header)
    names = [tensor.name for tensor in request.inputs]
    if names != [INPUT]:
        raise BadRequest(f"the request has inputs {names}: this model takes one input, {INPUT!r} ([N, C, H, W])")
    tensor = request.inputs[0]
    if tensor.datatype not in DATATYPES:
        raise BadRequest(f"input {INPUT!r} has datatype {tensor.datatype!r}: send {ACCEPTED}")
    if "shared_memory_region" in tensor.parameters:
        raise BadRequest("shared memory is not supported: send the tensor as JSON data or binary data")
    n, channels, height, width = _check_shape(tensor, size, limits)
    count = n * channels * height * width
    binary_size = tensor.parameters.get("binary_data_size")
    if binary_size is None:
        if binary:
            raise BadRequest(f"{len(binary)} bytes follow the JSON header but no input declares binary_data_size")
        if tensor.data is None:
            raise BadRequest(f"input {INPUT!r} has no data: send data, or binary data with binary_data_size")
        values = _from_json(tensor.data, count)
    else:
        if isinstance(binary_size, bool) or not isinstance(binary_size, int) or binary_size < 0:
            raise BadRequest(f"input {INPUT!r}: binary_data_size must be a byte count, not {binary_size!r}")
        if header_length is None:
            raise BadRequest(f"input {INPUT!r} declares binary_data_size without the {HEADER_LENGTH} header")
        if tensor.data is not None:
            raise BadRequest(f"input {INPUT!r} has both data and binary_data_size: send one of them")
        if binary_size != len(binary):
            raise BadRequest(
                f"input {INPUT!r}: binary_data_size is {binary_size} but {len(binary)} bytes follow the JSON header"
            )
        values = _from_binary(binary, tensor.datatype, count)
    images = _to_unit(values, tensor.datatype).reshape(n, channels, height, width)
    return Decoded(images, tensor.datatype, _requested_outputs(request), request.id)


# ---- the model --------------------------------------------------------------------------------------------


async def _all(awaitables: Sequence[Awaitable[T]]) -> list[T]:
    """Every result in order; when one fails, the others are cancelled (their batches need not run)."""
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


async def predict(denoiser: Denoiser, images: np.ndarray, arrival: ArrivalToken | None) -> list[Output]:
    """Each N×C×H×W image through the model's serving path: ``Denoiser.predict`` (the skip-the-queue path
    when the model is idle, tiles for an image larger than a tile, the colour path), or, for several grey
    images no larger than a tile, straight into the batcher's queue all at once, as ``Denoiser.predict``
    queues its tiles: one at a time, the first would take a forward alone and the rest another."""
    n, channels, height, width = images.shape
    if n == 1 or channels > 1 or max(height, width) > denoiser.tile_size:
        return await _all([denoiser.predict(Prepared(Picture(image), None, None), arrival) for image in images])
    queued: list[asyncio.Future[Prediction]] = []
    try:
        for image in images[:, 0]:
            queued.append(denoiser.batcher.enqueue(image, arrival))  # 503 when the queue is full
    except BaseException:
        for future in queued:
            future.cancel()
        raise
    predictions = await _all(queued)
    return [Output(prediction.output[None], prediction.reconstruction_mse) for prediction in predictions]


# ---- the answer -------------------------------------------------------------------------------------------


def _tensor(name: str, outputs: list[Output], datatype: str) -> np.ndarray:
    if name == MSE:
        return np.array([output.reconstruction_mse for output in outputs], dtype=np.float32)
    planes = np.stack([output.planes for output in outputs])  # N×C×H×W
    # UINT8 and UINT16 exactly as /denoise writes its PNG (service.encoding.quantize, quantize16); FP32 clamped to
    # the documented range.
    if datatype in QUANTIZE:
        return QUANTIZE[datatype](planes)
    return np.clip(planes, 0.0, 1.0).astype(np.float32, copy=False)


def encode_response(model: str, decoded: Decoded, outputs: list[Output]) -> tuple[bytes, int | None]:
    """The answer's body, and the length of its JSON header when binary data follows it (else None)."""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, binary in decoded.outputs:
        array = _tensor(name, outputs, decoded.datatype)
        entry: dict[str, Any] = {
            "name": name,
            "datatype": "FP32" if name == MSE else decoded.datatype,
            "shape": list(array.shape),
        }
        if binary:
            raw = array.astype(DTYPES["FP32" if name == MSE else decoded.datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = array.reshape(-1).tolist()
        entries.append(entry)
    response: dict[str, Any] = {"model_name": model, "model_version": MODEL_VERSION, "outputs": entries}
    if decoded.id is not None:
        response["id"] = decoded.id
    header = json.dumps(response, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def json_bytes(decoded: Decoded) -> int:
    """About how many bytes of JSON numbers the answer will write (what makes encoding it slow)."""
    return 20 * sum(decoded.images.size for name, binary in decoded.outputs if name == DENOISED and not binary)
