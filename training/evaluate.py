"""Evaluation on the test split: MSE, PSNR and SSIM per image, averaged, under a fixed noise seed.

Noise for evaluation is drawn on the CPU from the seed, then moved to the model's device, so the same
command gives the same noisy images (and so comparable figures) on any machine.
"""

from __future__ import annotations

import torch
from torch import nn

from models.corruptions import corrupt, make_generator
from models.device import channels_last_if_convolutional
from models.metrics import mse_per_image, psnr_per_image, ssim_per_image

# The panel every shipped card reports: the reference defaults, plus a light and a heavy Gaussian.
STANDARD_PANEL: tuple[tuple[str, float], ...] = (
    ("gaussian", 0.3),
    ("salt_pepper", 0.2),
    ("masking", 0.3),
    ("gaussian", 0.1),
    ("gaussian", 0.5),
)
EVAL_SEED = 1234


def metric_key(noise: str, level: float) -> str:
    return f"{noise}@{level:g}"


def to_float_batch(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×H×W → float N×1×H×W in [0, 1]."""
    return images.unsqueeze(1).float().div_(255.0)


@torch.inference_mode()
def denoise_in_batches(model: nn.Module, noisy: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    channels_last_if_convolutional(model)  # as in training and serving
    device = next(model.parameters()).device
    outputs = [model(chunk.to(device)).float().cpu() for chunk in noisy.split(batch_size)]
    return torch.cat(outputs)


def make_noisy(clean: torch.Tensor, noise: str, level: float, seed: int = EVAL_SEED) -> torch.Tensor:
    return corrupt(clean, noise, level, make_generator(seed))


def quality(output: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    return {
        "mse": mse_per_image(output, clean).mean().item(),
        "psnr_db": psnr_per_image(output, clean).mean().item(),
        "ssim": ssim_per_image(output, clean).mean().item(),
    }


def evaluate(
    model: nn.Module, images: torch.Tensor, noise: str, level: float, seed: int = EVAL_SEED
) -> dict[str, float]:
    """Figures of the model on ``images`` (uint8) under one noise, and of the noisy input itself."""
    clean = to_float_batch(images)
    noisy = make_noisy(clean, noise, level, seed)
    denoised = denoise_in_batches(model, noisy)
    figures = quality(denoised, clean)
    figures["noisy_psnr_db"] = psnr_per_image(noisy, clean).mean().item()
    return figures
