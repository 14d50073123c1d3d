"""Every way a request can go wrong answered with its status and a detail that says what to fix, and the
service healthy after each: bad uploads and fields, too many bytes, a missing API key, a model that raises."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from tests.service.conftest import (
    FIXED_SIZE_MODEL,
    MODELS_IN_PROCESS,
    AppClient,
    denoise,
    png_bytes,
    runner_in_process,
    upload,
)


def test_batch_refuses_more_files_than_allowed(make_client: Any, digit: bytes) -> None:
    client = make_client(max_batch_files=2)
    files = [("file", (f"{i}.png", digit, "image/png")) for i in range(3)]
    response = client.post("/denoise/batch", files=files)
    assert response.status_code == 422
    assert "at most 2 per request" in response.json()["detail"]


def _truncated_png() -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    return png_bytes(noise)[:300]


def _png_declaring_60000_square() -> bytes:
    from tests.service.test_images import png_declaring

    return png_declaring(60000, 60000)


BAD_INPUTS = [
    # (id, files, form fields, status, words the detail must contain)
    ("empty", {"file": ("a.png", b"", "image/png")}, {}, 400, "empty"),
    ("not-an-image", {"file": ("a.png", b"%PDF-1.4 not an image", "application/pdf")}, {}, 400, "not an image"),
    ("truncated-png", {"file": ("a.png", _truncated_png(), "image/png")}, {}, 400, "truncated"),
    ("bomb-header", {"file": ("a.png", _png_declaring_60000_square(), "image/png")}, {}, 413, "60000×60000"),
    ("unknown-noise", None, {"noise": "speckle"}, 422, "noise"),
    ("level-above-1", None, {"noise": "gaussian", "level": "1.5"}, 422, "level"),
    ("level-negative", None, {"noise": "gaussian", "level": "-0.1"}, 422, "level"),
    ("level-nan", None, {"noise": "gaussian", "level": "nan"}, 422, "finite"),
    ("level-not-a-number", None, {"noise": "gaussian", "level": "high"}, 422, "level"),
    ("level-without-noise", None, {"level": "0.2"}, 422, "only apply with noise"),
    ("unknown-model", None, {"model": "no-such-model"}, 404, "no-such-model"),
    ("missing-file", {}, {"noise": "gaussian"}, 422, "file"),
    ("wrong-field-name", "image", {}, 422, "image"),
    ("negative-seed", None, {"noise": "gaussian", "seed": "-1"}, 422, "seed"),
]


@pytest.mark.parametrize(
    "files,fields,status,words", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS]
)
def test_bad_input_gets_its_4xx_with_a_detail_and_the_service_stays_healthy(
    client: AppClient, digit: bytes, files: Any, fields: dict[str, str], status: int, words: str
) -> None:
    if files is None:
        files = upload(digit)
    elif files == "image":
        files = {"image": ("a.png", digit, "image/png")}
    response = client.post("/denoise", files=files or None, data=fields)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and words in detail
    assert client.get("/healthz").status_code == 200
    assert denoise(client, digit, model=FIXED_SIZE_MODEL)["width"] == 28


def test_a_body_that_is_not_multipart_is_a_422_naming_the_file_field(client: AppClient) -> None:
    response = client.post("/denoise", json={"file": "digit.png"})
    assert response.status_code == 422
    assert "file" in response.json()["detail"]


def test_corrupt_needs_a_noise(client: AppClient, digit: bytes) -> None:
    response = client.post("/corrupt", files=upload(digit))
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "noise", "message": "Field required"}]


def test_too_many_bytes_is_413_from_the_header_or_the_count(make_client: Any) -> None:
    client = make_client(max_upload_bytes=2000)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    medium = png_bytes(noise)  # about 4 kB: past the limit, within the multipart allowance
    huge = png_bytes(np.random.default_rng(1).integers(0, 256, (400, 400), dtype=np.uint8))  # 160 kB
    for data in (medium, huge):
        response = client.post("/denoise", files=upload(data))
        assert response.status_code == 413
        assert "2000" in response.json()["detail"]
    small = png_bytes(np.zeros((28, 28), dtype=np.uint8))
    assert client.post("/denoise", files=upload(small)).status_code == 200


def test_api_key_guards_every_route_but_probes_docs_and_the_demo(make_client: Any, digit: bytes) -> None:
    client = make_client(api_key="s3cret-key")
    for path in (
        "/healthz",
        "/readyz",
        "/docs",
        "/openapi.json",
        "/",
        "/static/app.js",
        "/static-offline-docs/swagger-ui.css",
    ):
        assert client.get(path).status_code == 200, path
    for path in ("/models", "/metrics"):
        assert client.get(path).status_code == 401, path
    missing = client.post("/denoise", files=upload(digit))
    assert missing.status_code == 401 and "API key" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = client.post("/denoise", files=upload(digit), headers={"X-API-Key": "s3cret-kex"})
    assert wrong.status_code == 401
    for headers in ({"Authorization": "Bearer s3cret-key"}, {"X-API-Key": "s3cret-key"}):
        assert client.post("/denoise", files=upload(digit), headers=headers).status_code == 200
        assert client.get("/models", headers=headers).status_code == 200


class BreaksOnWhite(torch.nn.Module):
    """The real model, except that any batch holding an all-white image raises (a model bug)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x.flatten(1).min(dim=1).values >= 1.0).any()):
            raise RuntimeError("this model cannot take a white image")
        out: torch.Tensor = self.model(x)
        return out


def test_a_model_that_raises_fails_only_that_image_and_the_service_goes_on(
    make_client: Any, digits: list[bytes]
) -> None:
    client = make_client(**MODELS_IN_PROCESS)
    runner = runner_in_process(client.store, FIXED_SIZE_MODEL)
    runner.model = BreaksOnWhite(runner.model)
    white = png_bytes(np.full((28, 28), 255, dtype=np.uint8))
    named = (("a", digits[0]), ("white", white), ("b", digits[1]))
    files = [("file", (name, data, "image/png")) for name, data in named]
    response = client.post("/denoise/batch", files=files, data={"model": FIXED_SIZE_MODEL})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status_code"] for r in results] == [200, 500, 200]
    assert "cannot take a white image" in results[1]["detail"]
    single = client.post("/denoise", files=upload(white), data={"model": FIXED_SIZE_MODEL})
    assert single.status_code == 500 and "white image" in single.json()["detail"]
    assert client.get("/readyz").status_code == 200
    assert denoise(client, digits[2], model=FIXED_SIZE_MODEL)["model"] == FIXED_SIZE_MODEL
