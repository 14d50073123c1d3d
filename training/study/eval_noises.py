"""Corruptions for evaluation only: noise types no model of the project is ever trained on.

They live here, not in ``models.corruptions``: that registry is what ``dae-train`` trains on and what the
HTTP API offers, and these exist only to ask whether a denoiser generalises beyond its training noise.
Each maps a batch N×1×H×W in [0, 1] to one of the same shape in [0, 1], draws only from the generator it
is given (so a seed reproduces it; blur and JPEG draw nothing), and reads ``level`` as its entry in
``EVAL_NOISES`` says. A level here need not lie in [0, 1] (a JPEG quality, a photon count).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

Apply = Callable[[torch.Tensor, float, "torch.Generator | None"], torch.Tensor]


@dataclass(frozen=True)
class EvalNoise:
    name: str
    label: str  # how a table names it, followed by the level (e.g. "Poisson peak 10")
    level_means: str
    apply: Apply


EVAL_NOISES: dict[str, EvalNoise] = {}


def register(name: str, label: str, level_means: str) -> Callable[[Apply], Apply]:
    def wrap(apply: Apply) -> Apply:
        EVAL_NOISES[name] = EvalNoise(name, label, level_means, apply)
        return apply

    return wrap


@register("poisson", "Poisson peak", "photons counted at white: fewer photons, more shot noise")
def poisson(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shot noise: each pixel is a Poisson count with mean ``x · peak``, divided by ``peak``."""
    return (torch.poisson(x * level, generator=generator) / level).clamp_(0.0, 1.0)


@register("speckle", "speckle σ", "σ of the multiplicative Gaussian factor")
def speckle(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Multiplicative noise, x · (1 + σ n): it hits the strokes and leaves a black background black."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return (x * (1 + level * noise)).clamp_(0.0, 1.0)


@register("blur", "Gaussian blur σ", "σ in pixels of the Gaussian point-spread function")
def blur(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Defocus-like blur: a separable Gaussian kernel (3σ each side), reflected at the borders."""
    radius = max(1, math.ceil(3 * level))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (taps / level) ** 2)
    kernel = kernel / kernel.sum()
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(rows, kernel.view(1, 1, -1, 1)).clamp_(0.0, 1.0)


@register("jpeg", "JPEG quality", "the encoder's quality setting, 1 (worst) to 95")
def jpeg(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Compression artefacts: each image saved as an 8-bit JPEG at this quality (Pillow) and read back."""
    pixels = (x[:, 0].clamp(0.0, 1.0) * 255).round().to(torch.uint8).numpy()
    decoded = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=round(level))
        buffer.seek(0)
        with Image.open(buffer) as read:
            decoded.append(np.asarray(read.convert("L")))
    return torch.from_numpy(np.stack(decoded)).to(x.dtype).div_(255).unsqueeze(1)


@register("stripes", "column stripes σ", "σ of the offset added to every pixel of a column")
def stripes(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fixed-pattern sensor noise: one Gaussian offset per column of each image, so the noise is
    correlated along columns, unlike every noise the models were trained on (independent per pixel)."""
    offsets = torch.randn((x.shape[0], 1, 1, x.shape[-1]), generator=generator, dtype=x.dtype)
    return (x + level * offsets).clamp_(0.0, 1.0)


def apply_eval_noise(x: torch.Tensor, name: str, level: float, generator: torch.Generator | None) -> torch.Tensor:
    if name not in EVAL_NOISES:
        raise ValueError(f"unknown evaluation noise {name!r}; known: {', '.join(EVAL_NOISES)}")
    return EVAL_NOISES[name].apply(x, level, generator)
