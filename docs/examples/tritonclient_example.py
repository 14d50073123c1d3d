"""Denoise images through the service's Open Inference Protocol (KServe v2) routes, with Triton's HTTP client.

    pip install "tritonclient[http]" pillow
    python docs/examples/tritonclient_example.py --url localhost:8000 digit1.png digit2.png

The images (all of one size: 28×28 digits for the default model) go as one UINT8 tensor [N, 1, H, W] in one
request; each denoised image is written beside its file as NAME.denoised.png and its reconstruction MSE
printed. When the service has an API key, put it in DAE_API_KEY.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from PIL import Image


def denoise(
    url: str, images: np.ndarray, model: str = "conv-blind", api_key: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """N×H×W uint8 grey images → (the N×H×W uint8 denoised images, each one's reconstruction MSE)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    with httpclient.InferenceServerClient(url) as client:  # host:port, without http://
        batch = images[:, None]  # [N, 1, H, W]: one grey channel
        tensor = httpclient.InferInput("images", list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch)  # sent as binary tensor data, tritonclient's default
        outputs = [httpclient.InferRequestedOutput("denoised"), httpclient.InferRequestedOutput("reconstruction_mse")]
        result = client.infer(model, [tensor], outputs=outputs, headers=headers)
        return result.as_numpy("denoised")[:, 0], result.as_numpy("reconstruction_mse")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Denoise images with the service's KServe v2 routes")
    parser.add_argument("images", nargs="+", type=Path, help="image files, all of one size")
    parser.add_argument("--url", default="localhost:8000", help="the service, as host:port")
    parser.add_argument("--model", default="conv-blind", help="a model from GET /models")
    args = parser.parse_args(argv)
    images = np.stack([np.asarray(Image.open(path).convert("L")) for path in args.images])
    denoised, errors = denoise(args.url, images, args.model, os.environ.get("DAE_API_KEY"))
    for path, image, error in zip(args.images, denoised, errors, strict=True):
        written = path.with_suffix(".denoised.png")
        Image.fromarray(image).save(written)
        print(f"{path} → {written}: reconstruction MSE {error:.5f}")


if __name__ == "__main__":
    main()
