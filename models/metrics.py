"""Image-quality metrics, per image, for batches N×1×H×W in [0, 1] (data range 1)."""

from __future__ import annotations

import math
import warnings

import torch

# A perfect reconstruction has infinite PSNR; report it as this instead so that means stay finite.
MAX_PSNR_DB = 100.0


def mse_per_image(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each image, shape (N,)."""
    return (output.float() - target.float()).pow(2).flatten(1).mean(dim=1)


def psnr_per_image(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image with data range 1, shape (N,); average these for a data set."""
    mse = mse_per_image(output, target)
    return (-10.0 * torch.log10(mse.clamp_min(10 ** (-MAX_PSNR_DB / 10)))).clamp_max(MAX_PSNR_DB)


def psnr_db_from_mse(mse: float) -> float:
    """PSNR in dB (data range 1) of one image's MSE, capped at ``MAX_PSNR_DB`` like ``psnr_per_image``."""
    return MAX_PSNR_DB if mse <= 10 ** (-MAX_PSNR_DB / 10) else -10.0 * math.log10(mse)


def ssim_per_image(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM of each image (Gaussian window 11, σ 1.5, data range 1), shape (N,)."""
    # Imported here: torchmetrics pulls in torchvision and torch._dynamo, seconds of start-up that the
    # service, which never computes SSIM per request, should not pay in every worker.
    from torchmetrics.functional.image import structural_similarity_index_measure

    # On the CPU, oneDNN's grouped convolution (the Gaussian window over SSIM's five maps) is slower than ATen's
    # own kernel, with the same values: it is switched off for this call. The switch is process-wide, which is
    # why only offline evaluation computes SSIM; its context manager also warns about TF32, which CPUs lack.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TF32", category=UserWarning)
        with torch.backends.mkldnn.flags(enabled=output.device.type != "cpu"):
            ssim = structural_similarity_index_measure(output.float(), target.float(), data_range=1.0, reduction="none")
    assert isinstance(ssim, torch.Tensor)
    return ssim
