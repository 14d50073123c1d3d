"""Inference precision (DAE_INFERENCE_DTYPE): bfloat16 serves the same quality as float32, and says so."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from models.device import cpu_has_native_bf16, dtype_name
from tests.conftest import FIXTURE_ROOT
from tests.service.conftest import AppClient, png_bytes

PANEL = (("gaussian", 0.3), ("salt_pepper", 0.2), ("masking", 0.3))


def _panel_psnr(client: AppClient, model: str, files: list[tuple[str, tuple[str, bytes, str]]]) -> list[float]:
    """Mean denoised PSNR on the fixture digits for each noise of the panel (server-side noise, fixed seed)."""
    figures = []
    for noise, level in PANEL:
        fields = {"model": model, "noise": noise, "level": str(level), "seed": "7"}
        response = client.post("/denoise/batch", files=files, data=fields)
        assert response.status_code == 200, response.text
        figures.append(float(np.mean([item["result"]["denoised_psnr_db"] for item in response.json()["results"]])))
    return figures


def test_bfloat16_inference_matches_float32_within_a_tenth_of_a_db(make_client: Callable[..., AppClient]) -> None:
    from training.data import load_split

    images, _ = load_split("mnist", "test", FIXTURE_ROOT, download=False)
    files = [("file", (f"{i}.png", png_bytes(image.numpy()), "image/png")) for i, image in enumerate(images[:32])]
    figures = {}
    for dtype in ("float32", "bfloat16"):
        client = make_client(inference_dtype=dtype)
        models = client.get("/models").json()["models"]
        assert {model["inference_dtype"] for model in models} == {dtype}
        figures[dtype] = {name: _panel_psnr(client, name, files) for name in ("conv-blind", "mlp-gaussian")}
    for name, exact in figures["float32"].items():
        assert np.allclose(figures["bfloat16"][name], exact, atol=0.1), (name, figures)
    assert min(figures["bfloat16"]["conv-blind"]) > 22.0  # the shipped model's quality (24-30 dB on these 32 digits)


def test_the_running_service_says_which_precision_each_model_got(client: AppClient) -> None:
    """DAE_INFERENCE_DTYPE=auto: bfloat16 for the U-Nets where the CPU has it natively, float32 for the MLPs."""
    native = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    served = {model["architecture"]: model["inference_dtype"] for model in client.get("/models").json()["models"]}
    assert served["conv"] == dtype_name(native) and served["mlp"] == "float32"
    assert served.get("unet-res", dtype_name(native)) == dtype_name(native)  # the photo model is a U-Net too
