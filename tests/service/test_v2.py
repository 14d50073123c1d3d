"""The Open Inference Protocol (KServe v2) routes, through Triton's own client (``tritonclient.http``) against a
live server over the shipped checkpoints and real MNIST digits: health and metadata, infer with binary and
JSON tensors equal to what /denoise answers for the same image, errors in the protocol's shape, the API key,
and concurrent calls sharing forward passes. Raw ``httpx`` requests cover what tritonclient never sends.
"""

from __future__ import annotations

import base64
import gzip
import json
import runpy
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from hypothesis import event, given, settings
from hypothesis import strategies as st
from PIL import Image
from tritonclient.utils import InferenceServerException

from service import v2
from service.app import create_app
from service.errors import ServiceError
from tests.conftest import FIXTURE_ROOT, REPO
from tests.service.conftest import LiveServer, decode_png, png_bytes, png_samples, serving, settings_for, wide_png
from tests.service.test_server import metric

DIGIT_MODEL = "conv-blind"  # any size; its forwards run in the child process (the default placement)
FIXED_MODEL = "mlp-gaussian"  # 28×28 only
PHOTO_MODEL = "photo-blind"
EXAMPLE = REPO / "docs" / "examples" / "tritonclient_example.py"
COLOUR_PHOTO = FIXTURE_ROOT / "colour" / "coffee.png"
# One grey level: the same image can share a forward pass with other images in one call and not in the other,
# and a batch of another size may take another kernel whose float sums differ in the last bits; a pixel
# that sits on a rounding boundary then moves by one level. Anything more would be a real difference.
GREY_LEVELS = 1
MSE_RTOL = 1e-3  # the same last-bits differences, on the mean of 784 squared errors
MAX_IMAGES = 8
MAX_PIXELS = 128 * 128
TILE = 64  # small tiles, so that a 100×80 photo is cut into several and stitched back
CALLS, THREADS = 64, 16
CALL_DEADLINE_S = 120.0  # a bound on the concurrent calls, far above what they take; no assertion reads a time


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with serving(
        max_batch_files=MAX_IMAGES,
        max_image_pixels=MAX_PIXELS,
        max_upload_bytes=512 * 1024,
        tile_size=TILE,
        tile_overlap=8,
    ) as live:
        yield live


@pytest.fixture(scope="module")
def triton(server: LiveServer) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(server.url.removeprefix("http://")) as client:
        yield client


@pytest.fixture(scope="module")
def pixels(digits: list[bytes]) -> np.ndarray:
    """The real digits as an N×28×28 uint8 array."""
    return np.stack([decode_png(digit) for digit in digits])


def infer(client: httpclient.InferenceServerClient, model: str, batch: np.ndarray, **options: Any) -> Any:
    datatype = {np.dtype(np.uint8): "UINT8", np.dtype(np.uint16): "UINT16"}.get(batch.dtype, "FP32")
    tensor = httpclient.InferInput("images", list(batch.shape), datatype)
    tensor.set_data_from_numpy(batch, binary_data=options.pop("binary", True))
    return client.infer(model, [tensor], **options)


def via_denoise(server: LiveServer, image: bytes, model: str) -> tuple[np.ndarray, float]:
    """/denoise's answer for one PNG: the denoised pixels and the reconstruction MSE it reports."""
    files = {"file": ("image.png", image, "image/png")}
    response = httpx.post(server.url + "/denoise", files=files, data={"model": model}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    return decode_png(base64.b64decode(body["denoised_png"])), body["reconstruction_mse"]


def assert_same_as_denoise(denoised: np.ndarray, mse: float, expected: tuple[np.ndarray, float]) -> None:
    pixels, expected_mse = expected
    assert denoised.dtype == np.uint8 and denoised.shape == pixels.shape
    assert np.abs(denoised.astype(int) - pixels.astype(int)).max() <= GREY_LEVELS
    assert mse == pytest.approx(expected_mse, rel=MSE_RTOL)


def post_infer(server: LiveServer, body: bytes, model: str = DIGIT_MODEL, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{model}/infer", content=body, headers=headers, timeout=60)


def protocol_error(response: httpx.Response, status: int) -> str:
    """The text of an error in the protocol's shape, after checking its status."""
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["error"], str) and body["error"], body
    return str(body["error"])


def raises(status: int, call: Callable[[], Any]) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == str(status), caught.value
    return str(caught.value.message())


# ---- health and metadata -----------------------------------------------------------------------------------


def test_server_live_ready_and_metadata(server: LiveServer, triton: httpclient.InferenceServerClient) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    metadata = triton.get_server_metadata()
    assert metadata["name"] and metadata["version"] == "0.1.0"
    assert "binary_tensor_data" in metadata["extensions"]
    for model in (DIGIT_MODEL, FIXED_MODEL, PHOTO_MODEL):
        assert triton.is_model_ready(model) and triton.is_model_ready(model, "1")
    assert not triton.is_model_ready(DIGIT_MODEL, "2")
    assert not triton.is_model_ready("no-such-model")


def test_ready_follows_the_rule_of_readyz(server: LiveServer, triton: httpclient.InferenceServerClient) -> None:
    server.store.ready = False  # as during warm-up
    try:
        response = httpx.get(server.url + "/v2/health/ready")
        assert "warming up" in protocol_error(response, 503) and response.headers["retry-after"] == "1"
        assert httpx.get(server.url + "/readyz").status_code == 503
        assert not triton.is_server_ready() and not triton.is_model_ready(DIGIT_MODEL)
        assert triton.is_server_live()
    finally:
        server.store.ready = True
    assert triton.is_server_ready()


@pytest.mark.parametrize(
    ("model", "shape"),
    [(DIGIT_MODEL, [-1, -1, -1, -1]), (PHOTO_MODEL, [-1, -1, -1, -1]), (FIXED_MODEL, [-1, 1, 28, 28])],
)
def test_model_metadata_gives_names_datatypes_and_shapes(
    triton: httpclient.InferenceServerClient, model: str, shape: list[int]
) -> None:
    metadata = triton.get_model_metadata(model)
    assert triton.get_model_metadata(model, "1") == metadata
    assert (metadata["name"], metadata["versions"], metadata["platform"]) == (model, ["1"], "pytorch")
    tensors = [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"] + metadata["outputs"]]
    assert tensors == [("images", "FP32", shape), ("denoised", "FP32", shape), ("reconstruction_mse", "FP32", [-1])]
    assert metadata["inputs"][0]["parameters"]["accepted_datatypes"] == "FP32,UINT8,UINT16"
    assert "/denoise" in metadata["outputs"][1]["parameters"]["description"]


def test_an_unknown_model_or_version_is_404_in_the_protocols_shape(
    server: LiveServer, triton: httpclient.InferenceServerClient, pixels: np.ndarray
) -> None:
    assert "loaded:" in raises(404, lambda: triton.get_model_metadata("no-such-model"))
    assert "no version '7'" in raises(404, lambda: triton.get_model_metadata(DIGIT_MODEL, "7"))
    assert "loaded:" in raises(404, lambda: infer(triton, "no-such-model", pixels[:1, None]))
    assert "no version" in raises(404, lambda: infer(triton, DIGIT_MODEL, pixels[:1, None], model_version="2"))
    assert protocol_error(httpx.get(server.url + "/v2/no-such-route"), 404)
    assert protocol_error(httpx.get(f"{server.url}/v2/models/{DIGIT_MODEL}/infer"), 405)


# ---- infer: the same answer as /denoise ------------------------------------------------------------------


@pytest.mark.parametrize("model", [DIGIT_MODEL, FIXED_MODEL])
def test_binary_uint8_infer_equals_denoise(
    server: LiveServer, triton: httpclient.InferenceServerClient, digits: list[bytes], pixels: np.ndarray, model: str
) -> None:
    result = infer(triton, model, pixels[:1, None])  # tritonclient's defaults: binary in, binary out
    response = result.get_response()
    assert (response["model_name"], response["model_version"]) == (model, "1")
    assert all("binary_data_size" in output["parameters"] for output in response["outputs"])
    denoised, mse = result.as_numpy("denoised"), result.as_numpy("reconstruction_mse")
    assert denoised.shape == (1, 1, 28, 28) and mse.shape == (1,) and mse.dtype == np.float32
    assert_same_as_denoise(denoised[0, 0], float(mse[0]), via_denoise(server, digits[0], model))


@pytest.mark.parametrize("datatype", ["UINT8", "FP32"])
def test_json_infer_equals_denoise(
    server: LiveServer, triton: httpclient.InferenceServerClient, digits: list[bytes], pixels: np.ndarray, datatype: str
) -> None:
    batch = pixels[1:2, None] if datatype == "UINT8" else pixels[1:2, None].astype(np.float32) / 255
    outputs = [httpclient.InferRequestedOutput(name, binary_data=False) for name in ("denoised", "reconstruction_mse")]
    result = infer(triton, DIGIT_MODEL, batch, binary=False, outputs=outputs, request_id="json-1")
    response = result.get_response()
    assert response["id"] == "json-1" and all("data" in output for output in response["outputs"])
    denoised = result.as_numpy("denoised")
    assert denoised.dtype == (np.uint8 if datatype == "UINT8" else np.float32)
    if datatype == "FP32":  # the same rounding /denoise applies to write its PNG
        assert denoised.min() >= 0.0 and denoised.max() <= 1.0
        denoised = (denoised * 255 + 0.5).astype(np.uint8)
    expected = via_denoise(server, digits[1], DIGIT_MODEL)
    assert_same_as_denoise(denoised[0, 0], float(result.as_numpy("reconstruction_mse")[0]), expected)


def test_a_batch_of_images_in_one_call_each_equals_denoise(
    server: LiveServer, triton: httpclient.InferenceServerClient, digits: list[bytes], pixels: np.ndarray
) -> None:
    result = infer(triton, DIGIT_MODEL, pixels[:MAX_IMAGES, None])
    denoised, mse = result.as_numpy("denoised"), result.as_numpy("reconstruction_mse")
    assert denoised.shape == (MAX_IMAGES, 1, 28, 28) and mse.shape == (MAX_IMAGES,)
    for i in range(MAX_IMAGES):
        assert_same_as_denoise(denoised[i, 0], float(mse[i]), via_denoise(server, digits[i], DIGIT_MODEL))
    assert len({float(value) for value in mse}) > 1  # each image its own error, not one copied


def test_a_photo_larger_than_a_tile_is_tiled_as_for_denoise(
    server: LiveServer, triton: httpclient.InferenceServerClient, pixels: np.ndarray
) -> None:
    photo = np.tile(pixels[2], (3, 4))[:80, :100]  # 100×80: four tiles of 64 with their overlaps
    result = infer(triton, PHOTO_MODEL, photo[None, None], request_compression_algorithm="gzip")
    denoised = result.as_numpy("denoised")[0, 0]
    assert denoised.shape == (80, 100)
    assert_same_as_denoise(
        denoised, float(result.as_numpy("reconstruction_mse")[0]), via_denoise(server, png_bytes(photo), PHOTO_MODEL)
    )


def test_colour_photos_in_planes_are_denoised_in_colour_as_for_denoise(
    server: LiveServer, triton: httpclient.InferenceServerClient
) -> None:
    """[N, 3, H, W], as Triton's image models take colour: the photo model's colour path, tiles included."""
    photo = np.asarray(Image.open(COLOUR_PHOTO).convert("RGB"))  # 96×96: tiles of 64
    noisy = np.clip(photo + np.random.default_rng(3).normal(0, 20, photo.shape), 0, 255).astype(np.uint8)
    batch = np.stack([noisy, noisy[::-1]]).transpose(0, 3, 1, 2)  # two photos, R, G, B planes
    result = infer(triton, PHOTO_MODEL, batch)
    denoised, mse = result.as_numpy("denoised"), result.as_numpy("reconstruction_mse")
    assert denoised.shape == batch.shape and mse.shape == (2,)
    for i in range(2):
        expected = via_denoise(server, png_bytes(batch[i].transpose(1, 2, 0)), PHOTO_MODEL)
        assert_same_as_denoise(denoised[i].transpose(1, 2, 0), float(mse[i]), expected)
    planes_alone = [via_denoise(server, png_bytes(noisy[..., c]), PHOTO_MODEL)[0] for c in range(3)]
    assert not np.array_equal(denoised[0], np.stack(planes_alone))  # in colour, not three grey images


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_sixteen_bit_images_in_uint16_equal_denoise_of_a_16_bit_png(
    server: LiveServer, triton: httpclient.InferenceServerClient, binary: bool
) -> None:
    """UINT16, what a 16-bit camera or scanner array is: the same answer, in 16 bits, as /denoise gives the same
    pixels sent as a 16-bit PNG (colour here: the photo model's colour path)."""
    photo = np.asarray(Image.open(COLOUR_PHOTO).convert("RGB")).astype(np.float64) * 256 + 100  # not multiples of 257
    noisy = np.clip(photo + np.random.default_rng(4).normal(0, 5000, photo.shape), 0, 65535).astype(np.uint16)
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in ("denoised", "reconstruction_mse")]
    result = infer(triton, PHOTO_MODEL, noisy.transpose(2, 0, 1)[None], binary=binary, outputs=outputs)
    denoised = result.as_numpy("denoised")
    assert denoised.dtype == np.uint16 and denoised.shape == (1, 3, 96, 96)
    response = httpx.post(
        server.url + "/denoise", files={"file": ("scan.png", wide_png(noisy))}, data={"model": PHOTO_MODEL}, timeout=60
    )
    depth, expected = png_samples(base64.b64decode(response.json()["denoised_png"]))
    assert depth == 16
    gap = np.abs(denoised[0].transpose(1, 2, 0).astype(int) - expected.astype(int)).max()
    assert gap <= GREY_LEVELS * 257  # the 8-bit tests' one grey level, in 16-bit units
    assert float(result.as_numpy("reconstruction_mse")[0]) == pytest.approx(
        response.json()["reconstruction_mse"], rel=MSE_RTOL
    )
    assert np.count_nonzero(denoised % 257) > denoised.size // 2  # the 16 bits are used, not 8 bits widened


# ---- client mistakes: clear 4xx, never a 500 --------------------------------------------------------------


def test_a_wrong_shape_or_datatype_is_a_clear_400(triton: httpclient.InferenceServerClient, pixels: np.ndarray) -> None:
    wrong_size = np.zeros((1, 1, 32, 32), dtype=np.uint8)
    assert "28×28" in raises(400, lambda: infer(triton, FIXED_MODEL, wrong_size))
    colour = np.zeros((1, 3, 28, 28), dtype=np.uint8)
    assert "one channel" in raises(400, lambda: infer(triton, FIXED_MODEL, colour))
    two_channels = np.zeros((1, 2, 28, 28), dtype=np.uint8)
    assert "C 3" in raises(400, lambda: infer(triton, DIGIT_MODEL, two_channels))
    assert "shape" in raises(400, lambda: infer(triton, DIGIT_MODEL, pixels[:1]))  # [1, 28, 28]: no channel axis
    for datatype, dtype in (("INT32", np.int32), ("FP64", np.float64)):
        tensor = httpclient.InferInput("images", [1, 1, 28, 28], datatype)
        tensor.set_data_from_numpy(pixels[:1, None].astype(dtype))
        message = raises(400, partial(triton.infer, DIGIT_MODEL, [tensor]))
        assert datatype in message and "FP32" in message and "UINT8" in message
    too_bright = np.full((1, 1, 28, 28), 255.0, dtype=np.float32)  # 8-bit values sent as FP32
    assert "[0, 1]" in raises(400, lambda: infer(triton, DIGIT_MODEL, too_bright))


def test_limits_are_413_as_for_uploads(triton: httpclient.InferenceServerClient, pixels: np.ndarray) -> None:
    too_many = np.repeat(pixels[:1, None], MAX_IMAGES + 1, axis=0)
    assert "DAE_MAX_BATCH_FILES" in raises(413, lambda: infer(triton, DIGIT_MODEL, too_many))
    too_large = np.zeros((1, 1, 129, 128), dtype=np.uint8)
    assert "DAE_MAX_IMAGE_PIXELS" in raises(413, lambda: infer(triton, PHOTO_MODEL, too_large))


def _request(shape: list[Any], datatype: str = "UINT8", **tensor: Any) -> bytes:
    return json.dumps({"inputs": [{"name": "images", "shape": shape, "datatype": datatype, **tensor}]}).encode()


def _binary(
    shape: list[int], data: bytes, declared: int | None = None, datatype: str = "UINT8"
) -> tuple[bytes, dict[str, str]]:
    """A request in the binary form, declaring ``declared`` bytes (``len(data)`` unless given)."""
    header = _request(shape, datatype, parameters={"binary_data_size": len(data) if declared is None else declared})
    return header + data, {HEADER: str(len(header))}


HEADER, DIGIT, ZEROS = v2.HEADER_LENGTH, [1, 1, 28, 28], [0] * 784
BLACK = _request(DIGIT, data=ZEROS)  # a valid request: one black digit as JSON
WITH_OUTPUT_X = json.dumps({**json.loads(BLACK), "outputs": [{"name": "x"}]}).encode()
MALFORMED: dict[str, tuple[bytes, dict[str, str], str]] = {
    "not JSON": (b"{inputs", {}, "not valid JSON"),
    "not an object": (b"[1, 2]", {}, "does not follow the protocol"),
    "no inputs": (b'{"inputs": []}', {}, "inputs"),
    "a misnamed input": (BLACK.replace(b'"images"', b'"x"'), {}, "'images'"),
    "a string as a size": (_request([1, 1, "28", 28], data=ZEROS), {}, "shape"),
    "too few values": (_request(DIGIT, data=ZEROS[1:]), {}, "783 values"),
    "text values": (_request(DIGIT, data=["a"] * 784), {}, "numbers"),
    "UINT8 out of range": (_request(DIGIT, data=[256] * 784), {}, "0..255"),
    "no data": (_request(DIGIT), {}, "no data"),
    "an unknown output": (WITH_OUTPUT_X, {}, "unknown output"),
    "binary size mismatch": (*_binary(DIGIT, bytes(700), declared=784), "700 bytes"),
    "binary size for the datatype": (*_binary(DIGIT, bytes(784), datatype="FP32"), "3136"),
    "header length past the body": (b"{}", {HEADER: "99"}, HEADER),
    "header length not a number": (b"{}", {HEADER: "two"}, HEADER),
    "bytes after JSON undeclared": (BLACK + bytes(10), {HEADER: str(len(BLACK))}, "binary_data_size"),
    "an unknown encoding": (b"{}", {"Content-Encoding": "br"}, "Content-Encoding"),
    "a broken gzip body": (b"\x1f\x8b not gzip", {"Content-Encoding": "gzip"}, "gzip"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_requests_are_400_in_the_protocols_shape(server: LiveServer, case: str) -> None:
    body, headers, says = MALFORMED[case]
    assert says in protocol_error(post_infer(server, body, **headers), 400)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)
# Requests shaped like the protocol's, any JSON in each place: names, shapes, datatypes, data, parameters.
_tensors = st.fixed_dictionaries(
    {"name": st.sampled_from(["images", "x"]), "shape": st.lists(st.integers(-1, 3) | _json, max_size=5)},
    optional={"datatype": st.sampled_from(["UINT8", "FP32", "INT8"]) | _json, "data": _json, "parameters": _json},
)
_documents = st.fixed_dictionaries(
    {"inputs": st.lists(_tensors, max_size=2) | _json},
    optional={"outputs": st.lists(st.fixed_dictionaries({"name": _json}), max_size=2) | _json, "parameters": _json},
)


@st.composite
def _near_valid(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A request that is right or nearly so: sizes around the limits, values around the ranges, counts off by
    one, binary or JSON; (body, Inference-Header-Content-Length)."""
    sizes = st.sampled_from([1, 2, 3, 1, 2, 3, 0, 4])  # mostly in the limits, sometimes past them
    shape = [draw(sizes), draw(st.sampled_from([1, 1, 1, 0, 2, 3, 3])), draw(sizes), draw(sizes)]
    n, channels, height, width = shape
    datatype = draw(st.sampled_from(["UINT8", "UINT16", "FP32"]))
    count = max(0, n * channels * height * width + draw(st.sampled_from([0, 0, 0, -1, 1])))
    value: st.SearchStrategy[Any]
    if datatype != "FP32":
        top = 255 if datatype == "UINT8" else 65535
        value = st.integers(0, top) if draw(st.booleans()) else st.integers(-1, top + 1)
    else:
        value = st.floats(0.0, 1.0, width=32) if draw(st.booleans()) else st.floats(-0.5, 1.5)
    values = draw(st.lists(value, min_size=count, max_size=count))
    tensor: dict[str, Any] = {"name": "images", "shape": shape, "datatype": datatype}
    outputs = draw(st.sampled_from([None, [{"name": "denoised", "parameters": {"binary_data": True}}]]))
    document: dict[str, Any] = {"inputs": [tensor], **({"outputs": outputs} if outputs else {})}
    if not draw(st.booleans()):
        tensor["data"] = values
        return json.dumps(document).encode(), None
    raw = np.array(values, dtype=np.float64).astype("<f4" if datatype == "FP32" else np.int64)
    data = raw.tobytes() if datatype == "FP32" else raw.astype(v2.DTYPES[datatype]).tobytes()  # ints wrap: still bytes
    tensor["parameters"] = {"binary_data_size": len(data) + draw(st.sampled_from([0, 0, 1]))}
    header = json.dumps(document).encode()
    return header + data, str(len(header))


@st.composite
def _anything(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """Any JSON document shaped like a request or not, binary bytes after it or not, a header right or wrong."""
    text = json.dumps(draw(_documents | _json)).encode()
    header = draw(st.sampled_from([str(len(text)), None, "x1"]))
    return (text + draw(st.binary(max_size=48)) if header is not None else text), header


@settings(max_examples=500, deadline=None, derandomize=True)
@given(request=_near_valid() | _anything(), size=st.sampled_from([None, (2, 3)]))
def test_any_request_decodes_or_is_a_clear_4xx(request: tuple[bytes, str | None], size: tuple[int, int] | None) -> None:
    body, length = request
    limits = v2.Limits(max_pixels=9, max_images=3)
    try:
        decoded = v2.decode_request(body, length, size, limits)
    except ServiceError as exc:  # anything else would be a 500
        assert exc.status_code in (400, 413) and exc.detail
        event(f"refused with {exc.status_code}")
        return
    event("decoded")
    n, channels, height, width = decoded.images.shape
    assert decoded.images.dtype == np.float32 and 1 <= n <= 3 and height * width <= 9
    assert channels == 1 or (channels == 3 and size is None)  # colour only for a model of any size
    assert size is None or (height, width) == size
    assert decoded.images.min() >= 0.0 and decoded.images.max() <= 1.0


def test_a_body_over_the_limit_is_413_in_the_protocols_shape(server: LiveServer) -> None:
    response = post_infer(server, b" " * (512 * 1024 + 1))
    assert "DAE_MAX_UPLOAD_BYTES" in protocol_error(response, 413)
    bomb = gzip.compress(b" " * (1 << 22))  # 4 KiB that inflate to 4 MiB
    assert "inflates past" in protocol_error(post_infer(server, bomb, **{"Content-Encoding": "gzip"}), 413)


def test_a_full_queue_is_503_with_retry_after_and_a_late_answer_504(server: LiveServer, pixels: np.ndarray) -> None:
    batcher = server.store.denoisers[DIGIT_MODEL].batcher
    queue_size, batcher.max_queue_size = batcher.max_queue_size, 2  # a batch of 3 cannot all be queued
    try:
        body, headers = _binary([3, 1, 28, 28], pixels[:3].tobytes())
        response = post_infer(server, body, **headers)
        assert "DAE_MAX_QUEUE_SIZE" in protocol_error(response, 503) and response.headers["retry-after"] == "1"
    finally:
        batcher.max_queue_size = queue_size
    photo_batcher = server.store.denoisers[PHOTO_MODEL].batcher
    timeout, photo_batcher.timeout_s = photo_batcher.timeout_s, 1e-4  # far shorter than a U-Net forward
    try:
        photo = np.zeros((1, 1, 128, 128), dtype=np.uint8)
        body, headers = _binary(list(photo.shape), photo.tobytes())
        assert "deadline" in protocol_error(post_infer(server, body, PHOTO_MODEL, **headers), 504)
    finally:
        photo_batcher.timeout_s = timeout
    assert post_infer(server, body, PHOTO_MODEL, **headers).status_code == 200  # and the service goes on


# ---- the API key ----------------------------------------------------------------------------------------


def test_the_api_key_guards_v2_with_a_401_in_the_protocols_shape(make_server: Any, pixels: np.ndarray) -> None:
    server: LiveServer = make_server(api_key="v2-secret")
    with httpclient.InferenceServerClient(server.url.removeprefix("http://")) as client:
        assert client.is_server_live() and client.is_server_ready()  # probes are open, as /healthz and /readyz
        assert "API key" in raises(401, client.get_server_metadata)
        assert "API key" in raises(401, lambda: client.get_model_metadata(DIGIT_MODEL))
        assert "API key" in raises(401, lambda: infer(client, DIGIT_MODEL, pixels[:1, None]))
        wrong = {"Authorization": "Bearer wrong"}
        assert "not the right one" in raises(401, lambda: infer(client, DIGIT_MODEL, pixels[:1, None], headers=wrong))
        right = {"Authorization": "Bearer v2-secret"}
        assert infer(client, DIGIT_MODEL, pixels[:1, None], headers=right).as_numpy("denoised").shape == (1, 1, 28, 28)
        assert client.get_model_metadata(DIGIT_MODEL, headers={"X-API-Key": "v2-secret"})["name"] == DIGIT_MODEL
    response = httpx.get(server.url + "/v2")
    assert protocol_error(response, 401) and response.headers["www-authenticate"] == "Bearer"
    assert set(httpx.get(server.url + "/models").json()) == {"detail"}  # the other routes keep their shape


# ---- concurrency ----------------------------------------------------------------------------------------


def test_concurrent_infer_calls_share_forward_passes(server: LiveServer, pixels: np.ndarray) -> None:
    expected = {}
    with httpclient.InferenceServerClient(server.url.removeprefix("http://")) as client:
        for i in range(len(pixels)):
            expected[i] = infer(client, DIGIT_MODEL, pixels[i : i + 1, None]).as_numpy("denoised")[0, 0]
    before = httpx.get(server.url + "/metrics").text

    def calls(thread: int) -> list[tuple[int, np.ndarray]]:
        # One client per thread: a tritonclient client is not to be shared between threads.
        with httpclient.InferenceServerClient(server.url.removeprefix("http://")) as client:
            indices = [(thread + THREADS * k) % len(pixels) for k in range(CALLS // THREADS)]
            return [
                (i, infer(client, DIGIT_MODEL, pixels[i : i + 1, None]).as_numpy("denoised")[0, 0]) for i in indices
            ]

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(calls, thread) for thread in range(THREADS)]
        answers = [answer for future in futures for answer in future.result(timeout=CALL_DEADLINE_S)]
    assert len(answers) == CALLS
    for i, denoised in answers:
        assert np.abs(denoised.astype(int) - expected[i].astype(int)).max() <= GREY_LEVELS
    after = httpx.get(server.url + "/metrics").text

    def delta(name: str) -> float:
        return metric(after, name, model=DIGIT_MODEL) - metric(before, name, model=DIGIT_MODEL)

    images, forwards = delta("dae_batch_size_sum"), delta("dae_batch_size_count")
    print(f"{CALLS} calls from {THREADS} threads: {images:.0f} images in {forwards:.0f} forwards")
    assert images == CALLS
    assert images / forwards > 1, "every call ran alone"


# ---- the documentation ----------------------------------------------------------------------------------


def test_openapi_documents_the_v2_routes_and_the_infer_body(server: LiveServer) -> None:
    schema = httpx.get(server.url + "/openapi.json").json()
    paths = schema["paths"]
    assert set(schema["components"]["schemas"]["ProtocolError"]["properties"]) == {"error", "detail"}
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/ready"):
        assert "get" in paths[path]
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        operation = paths[path]["post"]
        body = operation["requestBody"]["content"]
        assert {"inputs", "outputs", "parameters", "id"} <= set(body["application/json"]["schema"]["properties"])
        assert "application/octet-stream" in body
        assert "Inference-Header-Content-Length" in [parameter["name"] for parameter in operation["parameters"]]
        assert "ProtocolError" in json.dumps(operation["responses"]["400"])


def test_the_readme_example_runs_as_written(
    server: LiveServer,
    digits: list[bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = []
    for i in range(3):
        files.append(tmp_path / f"digit{i}.png")
        files[-1].write_bytes(digits[i])
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), "--url", server.url.removeprefix("http://"), *map(str, files)])
    runpy.run_path(str(EXAMPLE), run_name="__main__")  # exactly what `python docs/examples/...` runs
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 and all("reconstruction MSE" in line for line in printed)
    for i, path in enumerate(files):
        written = decode_png(path.with_suffix(".denoised.png").read_bytes())
        expected, _ = via_denoise(server, digits[i], DIGIT_MODEL)
        assert np.abs(written.astype(int) - expected.astype(int)).max() <= GREY_LEVELS


def test_the_readme_shows_the_example_that_runs() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Calling it with tritonclient") :]
    shown = section[
        section.index("```python\n") + len("```python\n") : section.index("\n```", section.index("```python"))
    ]
    core = shown[shown.index("def denoise(") :]
    assert core in EXAMPLE.read_text(), (
        "README.md's tritonclient code differs from docs/examples/tritonclient_example.py"
    )


def test_infer_requests_are_announced_to_the_batchers_on_arrival() -> None:
    """The infer routes are ``@batched``: ArrivalMiddleware must recognise their paths, which name the model."""
    from service.batcher import Arrivals
    from service.middleware import ArrivalMiddleware
    from service.routes import batched_paths

    paths, patterns = batched_paths(create_app(settings_for()).routes)
    announced = ArrivalMiddleware(lambda *_: None, Arrivals(), paths, patterns)._batched  # type: ignore[arg-type]
    assert announced("/denoise") and announced("/denoise/batch")

    assert announced("/v2/models/conv-blind/infer") and announced("/v2/models/photo-blind/versions/1/infer")
    assert not announced("/v2/models/conv-blind") and not announced("/v2/models/conv-blind/ready")
