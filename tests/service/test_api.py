"""The HTTP API, route by route, through the real app and the shipped checkpoints."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from models.checkpoint import load_checkpoint
from models.corruptions import NOISES
from tests.conftest import CHECKPOINT_DIR, FIXTURE_ROOT
from tests.service.conftest import (
    FIXED_SIZE_MODEL,
    AppClient,
    decode_png,
    denoise,
    encoded,
    png_bytes,
    shipped_models,
    upload,
)

JSON_FIELDS = {"model", "model_reason", "width", "height", "reconstruction_mse", "denoised_png", "latency_ms"}
NOISE_FIELDS = {"noise", "noisy_png", "noisy_mse", "noisy_psnr_db", "denoised_mse", "denoised_psnr_db"}


def test_healthz_and_readyz(client: AppClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "models": shipped_models()}


def test_models_describes_every_shipped_checkpoint(client: AppClient) -> None:
    body = client.get("/models").json()
    names = [model["name"] for model in body["models"]]
    assert names == shipped_models()
    expected_default = "conv-blind" if "conv-blind" in names else names[0]
    assert body["default_model"] == expected_default
    assert [m["name"] for m in body["models"] if m["default"]] == [expected_default]
    for model in body["models"]:
        _, card = load_checkpoint(CHECKPOINT_DIR / f"{model['name']}.json")
        assert model["architecture"] == card.architecture
        assert model["parameters"] == card.parameters
        assert model["input_size"] == card.input_size
        assert (model["noise"], model["noise_level"], model["dataset"]) == (card.noise, card.noise_level, card.dataset)
        assert model["test_metrics"] == card.test_metrics


def test_corrupt_returns_a_png_of_the_uploads_size_and_echoes_the_noise(client: AppClient) -> None:
    image = np.full((30, 40), 128, dtype=np.uint8)
    response = client.post("/corrupt", files=upload(png_bytes(image)), data={"noise": "gaussian", "seed": "7"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    noisy = decode_png(response.content)
    assert noisy.shape == (30, 40)
    assert 20 < noisy.std() < 30  # σ = 0.1 of the range (25.5 levels): clearly not the flat input any more
    # Anything but a 28×28 digit is a photo to the service: the photo level, within the photo model's training
    assert (response.headers["x-noise-type"], response.headers["x-noise-level"]) == ("gaussian", "0.1")
    assert response.headers["x-noise-seed"] == "7"
    level = client.post("/corrupt", files=upload(png_bytes(image), "a.png"), data={"noise": "gaussian", "level": "0.3"})
    assert level.headers["x-noise-level"] == "0.3"  # a level given is the level used


@pytest.mark.parametrize("noise", list(NOISES))
def test_a_level_left_out_is_the_digits_default_for_a_digit_and_the_photo_level_for_a_photo(
    client: AppClient, digit: bytes, noise: str
) -> None:
    photo = png_bytes(np.full((30, 40), 128, dtype=np.uint8))
    expected = {"digit": NOISES[noise].default_level, "photo": NOISES[noise].photo_level or NOISES[noise].default_level}
    for kind, image in (("digit", digit), ("photo", photo)):
        corrupted = client.post("/corrupt", files=upload(image), data={"noise": noise, "seed": "1"})
        assert float(corrupted.headers["x-noise-level"]) == pytest.approx(expected[kind], rel=1e-5), kind
        body = denoise(client, image, noise=noise, seed=1)
        assert body["noise"]["level"] == pytest.approx(expected[kind]), kind
        assert body["noisy_png"] == base64.b64encode(corrupted.content).decode()  # the same noise, both routes
    assert NOISES["gaussian"].photo_level == 0.1


@pytest.mark.parametrize("noise", ["gaussian", "salt_pepper", "masking", "mixed"])
def test_the_same_seed_gives_the_same_corrupt_bytes(client: AppClient, digit: bytes, noise: str) -> None:
    def corrupt(seed: int) -> bytes:
        response = client.post("/corrupt", files=upload(digit), data={"noise": noise, "seed": str(seed)})
        assert response.status_code == 200
        return response.content

    assert corrupt(11) == corrupt(11)
    assert corrupt(11) != corrupt(12)


def test_a_seed_left_out_is_reported_and_reproduces_the_noise(client: AppClient, digit: bytes) -> None:
    first = client.post("/corrupt", files=upload(digit), data={"noise": "salt_pepper", "level": "0.5"})
    seed = first.headers["x-noise-seed"]
    again = client.post("/corrupt", files=upload(digit), data={"noise": "salt_pepper", "level": "0.5", "seed": seed})
    assert again.content == first.content


def test_denoise_json_without_noise_has_exactly_the_base_fields(client: AppClient, digit: bytes) -> None:
    body = denoise(client, digit, model=FIXED_SIZE_MODEL)
    assert set(body) == JSON_FIELDS
    assert (body["model"], body["width"], body["height"]) == (FIXED_SIZE_MODEL, 28, 28)
    assert decode_png(base64.b64decode(body["denoised_png"])).shape == (28, 28)
    assert 0.0 <= body["reconstruction_mse"] < 1.0 and body["latency_ms"] > 0


def test_denoise_json_with_noise_reports_the_errors_against_the_clean_image(client: AppClient, digit: bytes) -> None:
    body = denoise(client, digit, model=FIXED_SIZE_MODEL, noise="gaussian", seed=3)
    assert set(body) == JSON_FIELDS | NOISE_FIELDS
    assert body["noise"] == {"type": "gaussian", "level": 0.3, "seed": 3}
    noisy = decode_png(base64.b64decode(body["noisy_png"])) / 255.0
    clean = decode_png(digit) / 255.0
    assert body["noisy_mse"] == pytest.approx(np.mean((noisy - clean) ** 2), abs=2e-4)  # PNG rounding only
    assert body["noisy_psnr_db"] == pytest.approx(-10 * np.log10(body["noisy_mse"]), abs=1e-6)
    assert body["denoised_psnr_db"] == pytest.approx(-10 * np.log10(body["denoised_mse"]), abs=1e-6)


def test_denoise_with_accept_png_returns_the_png_and_the_error_header(client: AppClient, digit: bytes) -> None:
    as_json = denoise(client, digit, model=FIXED_SIZE_MODEL)
    response = client.post(
        "/denoise", files=upload(digit), data={"model": FIXED_SIZE_MODEL}, headers={"Accept": "image/png"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == base64.b64decode(as_json["denoised_png"])
    assert float(response.headers["x-reconstruction-mse"]) == pytest.approx(as_json["reconstruction_mse"], rel=1e-5)


@pytest.mark.parametrize(
    "accept,answer",
    [
        ("image/*", "image/png"),  # any image: the lossless one
        ("image/webp,image/*;q=0.8", "image/webp"),
        ("image/*, application/json", "image/png"),
        ("application/json, image/*", "application/json"),
        ("*/*", "application/json"),  # curl's: JSON, as before
        ("application/json;q=0.5, image/jpeg", "image/jpeg"),  # the q-value ranks, then the place
        ("image/png;q=0, image/webp;q=0.1", "image/webp"),  # q=0: not this one
        ("text/html, image/avif", "application/json"),  # nothing it answers with: JSON
        ("image/jpeg;q=high", "application/json"),  # a q it cannot read leaves the type out
    ],
)
def test_accept_picks_the_answer_and_any_image_is_a_png(
    client: AppClient, digit: bytes, accept: str, answer: str
) -> None:
    response = client.post("/denoise", files=upload(digit), headers={"Accept": accept})
    assert response.status_code == 200 and response.headers["content-type"] == answer


def test_a_fixed_size_model_answers_at_its_size_and_a_convolutional_one_at_the_uploads(client: AppClient) -> None:
    image = png_bytes(np.random.default_rng(0).integers(0, 256, (30, 40), dtype=np.uint8))
    for entry in client.store.denoisers.values():
        body = denoise(client, image, model=entry.name)
        expected = tuple(entry.card.input_size or (30, 40))
        assert (body["height"], body["width"]) == expected
        assert decode_png(base64.b64decode(body["denoised_png"])).shape == expected


def _denoising_models() -> list[str]:
    return [name for name in shipped_models() if load_checkpoint(CHECKPOINT_DIR / f"{name}.json")[1].noise != "none"]


@pytest.mark.parametrize("model", _denoising_models())
def test_server_side_noise_is_denoised_to_a_higher_psnr(client: AppClient, model: str) -> None:
    from training.data import load_split

    card = client.store.denoisers[model].card
    if card.dataset in ("mnist", "fashion-mnist"):
        images, _ = load_split(card.dataset, "test", FIXTURE_ROOT, download=False)
        files = [("file", (f"{i}.png", png_bytes(image.numpy()), "image/png")) for i, image in enumerate(images[:12])]
    else:  # a photo model: the crops of real test photos in the fixture
        photos = sorted((FIXTURE_ROOT / "natural" / "set12").glob("*.png"))
        files = [("file", (path.name, path.read_bytes(), "image/png")) for path in photos]
    # Blind models are scored at a level inside their range: mixed at 0.5 means "up to 0.5".
    level = card.noise_level if card.noise != "mixed_photo" else 25 / 255
    noise = card.noise if card.noise != "mixed_photo" else "gaussian"
    fields = {"model": model, "noise": noise, "level": str(level), "seed": "0"}
    response = client.post("/denoise/batch", files=files, data=fields)
    assert response.status_code == 200
    results = [item["result"] for item in response.json()["results"]]
    noisy = np.mean([r["noisy_psnr_db"] for r in results])
    denoised = np.mean([r["denoised_psnr_db"] for r in results])
    assert denoised > noisy + 1.0, f"{model}: {noisy:.2f} dB noisy → {denoised:.2f} dB denoised"


def test_the_default_model_answers_when_none_is_named(client: AppClient, digit: bytes) -> None:
    body = denoise(client, digit, noise="gaussian", seed=1)
    assert body["model"] == client.store.default_name
    assert body["denoised_psnr_db"] > body["noisy_psnr_db"]


def test_batch_answers_in_upload_order_with_per_item_errors(client: AppClient, digits: list[bytes]) -> None:
    files = [
        ("file", ("a.png", digits[1], "image/png")),
        ("file", ("broken.png", b"not an image", "image/png")),
        ("file", ("c.png", digits[2], "image/png")),
    ]
    response = client.post(
        "/denoise/batch", files=files, data={"model": FIXED_SIZE_MODEL, "noise": "masking", "seed": "5"}
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["filename"], r["status_code"]) for r in results] == [("a.png", 200), ("broken.png", 400), ("c.png", 200)]
    assert "not an image" in results[1]["detail"] and "result" not in results[1]
    assert [r["result"]["noise"]["seed"] for r in (results[0], results[2])] == [5, 7]  # item i: seed + i
    single = denoise(client, digits[2], model=FIXED_SIZE_MODEL, noise="masking", seed=7)
    assert single["denoised_png"] == results[2]["result"]["denoised_png"]  # the same work, batched or not


def test_metrics_report_requests_batches_queue_and_inference(client: AppClient, digit: bytes) -> None:
    denoise(client, digit, model=FIXED_SIZE_MODEL)
    assert client.post("/denoise", files=upload(digit), data={"level": "2"}).status_code == 422
    text = client.get("/metrics").text
    for needle in (
        'dae_http_requests_total{method="POST",route="/denoise",status="200"}',
        'dae_http_requests_total{method="POST",route="/denoise",status="422"}',
        'dae_http_request_duration_seconds_bucket{le="0.005",route="/denoise"}',
        f'dae_batch_size_count{{model="{FIXED_SIZE_MODEL}"}}',
        f'dae_queue_depth{{model="{FIXED_SIZE_MODEL}"}}',
        f'dae_inference_seconds_count{{model="{FIXED_SIZE_MODEL}"}}',
        f'dae_queue_wait_seconds_count{{model="{FIXED_SIZE_MODEL}"}}',
    ):
        assert needle in text, needle


def test_openapi_documents_every_field_with_an_example(client: AppClient) -> None:
    spec = client.get("/openapi.json").json()
    routes = {"/corrupt", "/denoise", "/denoise/batch", "/models", "/healthz", "/readyz", "/metrics"}
    assert routes <= set(spec["paths"])
    schemas = dict(spec["components"]["schemas"])
    assert {"DenoiseResponse", "BatchResponse", "ModelsResponse", "ErrorResponse"} <= set(schemas)
    for path in ("/corrupt", "/denoise", "/denoise/batch"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert "file" in body["required"]
        schemas[f"{path} form"] = body
    for name, schema in schemas.items():
        for field, prop in schema["properties"].items():
            alternatives = [prop, prop.get("items", {}), *prop.get("anyOf", [])]
            nested = any("$ref" in alt or "$ref" in alt.get("items", {}) for alt in alternatives)
            upload = "contentMediaType" in prop or "contentMediaType" in prop.get("items", {})
            assert nested or upload or "examples" in prop, f"{name}.{field} has no example"
    denoise_op = spec["paths"]["/denoise"]["post"]
    assert {"400", "404", "413", "422", "503", "504"} <= set(denoise_op["responses"])
    assert "image/png" in denoise_op["responses"]["200"]["content"]


def test_docs_and_demo_page_are_served_from_the_apps_own_files(client: AppClient) -> None:
    docs = client.get("/docs").text
    assert "/static-offline-docs/swagger-ui-bundle.js" in docs
    assert "cdn" not in docs.lower()
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "https://" not in page.text and "http://" not in page.text
    for asset in ("/static/app.js", "/static/style.css", "/static/samples/digit-7.png"):
        assert client.get(asset).status_code == 200, asset


@pytest.mark.cuda
def test_on_cuda_the_models_run_on_the_gpu_and_the_noise_stays_the_same(
    client: AppClient, make_client: Any, digit: bytes
) -> None:
    gpu = make_client(device="cuda")
    assert gpu.store.denoisers[FIXED_SIZE_MODEL].placement.device.type == "cuda"
    assert next(gpu.store.denoisers[FIXED_SIZE_MODEL].runner.model.parameters()).is_cuda
    body = denoise(gpu, digit, model=FIXED_SIZE_MODEL, noise="gaussian", seed=0)
    assert body["denoised_psnr_db"] > body["noisy_psnr_db"]
    on_cpu = denoise(client, digit, model=FIXED_SIZE_MODEL, noise="gaussian", seed=0)
    assert body["noisy_png"] == on_cpu["noisy_png"]  # the noise is drawn on the CPU wherever the model runs
    assert body["denoised_mse"] == pytest.approx(on_cpu["denoised_mse"], abs=1e-4)


def test_the_noise_types_come_from_one_list(client: AppClient, digit: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /noises and the OpenAPI enum are models.corruptions.NOISES, and a noise registered there is served."""
    from models import corruptions

    listed = client.get("/noises").json()["noises"]
    assert [n["name"] for n in listed] == list(corruptions.NOISES)
    assert {n["name"]: n["default_level"] for n in listed} == corruptions.DEFAULT_LEVELS
    schema = client.get("/openapi.json").json()["paths"]["/corrupt"]["post"]["requestBody"]["content"]
    assert schema["multipart/form-data"]["schema"]["properties"]["noise"]["enum"] == list(corruptions.NOISES)

    monkeypatch.setitem(corruptions.NOISES, "invert", corruptions.Noise("invert", "invert", "unused", 0.0, invert))
    fields = {"noise": "invert", "seed": "1"}
    inverted = decode_png(client.post("/corrupt", files=upload(digit), data=fields).content)
    np.testing.assert_array_equal(inverted, 255 - decode_png(digit))
    assert "invert" in [n["name"] for n in client.get("/noises").json()["noises"]]
    unknown = client.post("/corrupt", files=upload(digit), data={"noise": "pink"})
    assert unknown.status_code == 422 and "gaussian" in unknown.json()["detail"]


def invert(x: torch.Tensor, level: float | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return 1.0 - x


# The image as the body itself, options in the query string: `curl --data-binary @photo.jpg -H 'Content-Type:
# image/jpeg'`, `fetch(url, {body: blob})`, HTTPie, and most image pipelines post an image so.
@pytest.mark.parametrize("content_type", ["image/jpeg", "application/octet-stream"])
def test_an_image_sent_as_the_body_is_answered_as_the_same_image_in_a_form(
    client: AppClient, content_type: str
) -> None:
    photo = sorted((FIXTURE_ROOT / "natural" / "set12").glob("*.png"))[0]
    jpeg = encoded(Image.open(photo), "JPEG", quality=95)
    query = {"noise": "gaussian", "level": "0.1", "seed": "4"}
    raw = client.post("/denoise", params=query, content=jpeg, headers={"Content-Type": content_type})
    form = client.post("/denoise", files=upload(jpeg, "photo.jpg"), data=query)
    assert raw.status_code == form.status_code == 200, raw.text
    raw_body, form_body = raw.json(), form.json()
    assert raw_body["model"] == form_body["model"] == "photo-blind"  # no model named: the photo model, as in a form
    assert raw_body["denoised_png"] == form_body["denoised_png"]
    assert raw_body["denoised_psnr_db"] > raw_body["noisy_psnr_db"] + 3
    as_png = client.post(
        "/denoise",
        params={"model": "photo-blind"},
        content=jpeg,
        headers={"Content-Type": content_type, "Accept": "image/png"},
    )
    assert as_png.headers["content-type"] == "image/png" and as_png.headers["x-model"] == "photo-blind"
    corrupted = client.post("/corrupt", params=query, content=jpeg, headers={"Content-Type": content_type})
    assert corrupted.content == client.post("/corrupt", files=upload(jpeg), data=query).content
    batch = client.post("/denoise/batch", params=query, content=jpeg, headers={"Content-Type": content_type})
    assert [item["result"]["denoised_png"] for item in batch.json()["results"]] == [form_body["denoised_png"]]


def test_a_body_that_cannot_be_an_image_or_options_in_the_wrong_place_say_how_to_send_it(
    client: AppClient, digit: bytes
) -> None:
    # curl --data-binary @digit.png with no Content-Type sends it as a urlencoded form.
    urlencoded = client.post("/denoise", content=digit, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert urlencoded.status_code == 415
    assert "Content-Type image/*" in urlencoded.json()["detail"] and "-F file=@" in urlencoded.json()["detail"]
    no_noise = client.post("/corrupt", content=digit, headers={"Content-Type": "image/png"})
    assert no_noise.status_code == 422 and "noise: Field required in the query string" in no_noise.json()["detail"]
    twice = client.post("/denoise", params={"model": "conv-blind"}, files=upload(digit), data={"model": "mlp-gaussian"})
    assert twice.status_code == 422 and "model: given both in the query and the form" in twice.json()["detail"]
    unknown = client.post(
        "/denoise", params={"modle": "conv-blind"}, content=digit, headers={"Content-Type": "image/png"}
    )
    assert unknown.status_code == 422 and "modle: unknown field" in unknown.json()["detail"]
    empty = client.post("/denoise", content=b"", headers={"Content-Type": "image/png"})
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    json_body = client.post("/denoise", json={"file": "digit.png"})
    assert json_body.status_code == 422 and "--data-binary" in json_body.json()["detail"]
    # Options in the query string go with a form too.
    assert (
        client.post("/denoise", params={"model": "mlp-gaussian"}, files=upload(digit)).json()["model"] == "mlp-gaussian"
    )


def test_openapi_offers_the_image_as_the_body_with_the_options_in_the_query(client: AppClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/denoise"]["post"]
    assert {"multipart/form-data", "image/*", "application/octet-stream"} <= set(operation["requestBody"]["content"])
    assert {(p["name"], p["in"]) for p in operation["parameters"]} == {
        ("model", "query"),
        ("noise", "query"),
        ("level", "query"),
        ("seed", "query"),
    }
    assert "415" in operation["responses"]
