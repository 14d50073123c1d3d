"""Corruptions that turn a clean batch x into the noisy x̃ a denoising autoencoder learns from.

All are vectorised over the batch, run on the tensor's own device, draw from an explicit
``torch.Generator`` (so a seed reproduces them) and keep values in [0, 1]. ``level`` may be a float
or a per-image tensor of shape (N,), which is how ``mixed`` gives every image its own level.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Level = float | torch.Tensor

DEFAULT_LEVELS: dict[str, float] = {
    "gaussian": 0.3,
    "salt_pepper": 0.2,
    "masking": 0.3,
    "mixed": 0.5,
    "none": 0.0,
}
NOISE_TYPES: tuple[str, ...] = tuple(DEFAULT_LEVELS)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


def validate_level(level: float) -> float:
    """A level is a finite number in [0, 1]; anything else is an error, never clamped."""
    if isinstance(level, bool) or not isinstance(level, (int, float)):
        raise ValueError(f"noise level must be a number in [0, 1], got {level!r}")
    if not math.isfinite(level) or not 0.0 <= level <= 1.0:
        raise ValueError(f"noise level must be in [0, 1], got {level}")
    return float(level)


def _per_image(level: Level, x: torch.Tensor) -> Level:
    """Broadcast a per-image level tensor (N,) against N×C×H×W."""
    if isinstance(level, torch.Tensor):
        return level.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return level


def _uniform(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def add_gaussian_noise(x: torch.Tensor, level: Level, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + N(0, level²), clamped to [0, 1]."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + _per_image(level, x) * noise).clamp_(0.0, 1.0)


def add_salt_pepper_noise(x: torch.Tensor, level: Level, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each pixel, with probability ``level``, becomes 0 or 1 with even odds."""
    replaced = _uniform(x, generator) < _per_image(level, x)
    salt = (_uniform(x, generator) < 0.5).to(x.dtype)
    return torch.where(replaced, salt, x)


def add_masking_noise(x: torch.Tensor, level: Level, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each pixel, with probability ``level``, is set to 0."""
    kept = _uniform(x, generator) >= _per_image(level, x)
    return x * kept.to(x.dtype)


_SPECIALISTS: dict[str, Callable[[torch.Tensor, Level, torch.Generator | None], torch.Tensor]] = {
    "gaussian": add_gaussian_noise,
    "salt_pepper": add_salt_pepper_noise,
    "masking": add_masking_noise,
}


def add_mixed_noise(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Blind-denoising noise: each image draws a type and a level uniform in [0, ``level``]."""
    n = x.shape[0]
    kinds = torch.randint(len(_SPECIALISTS), (n,), generator=generator, device=x.device)
    levels = torch.rand((n,), generator=generator, device=x.device, dtype=x.dtype) * level
    out = x
    # Computing every type for the whole batch and selecting keeps this one vectorised pass.
    for index, add_noise in enumerate(_SPECIALISTS.values()):
        chosen = (kinds == index).view(-1, *([1] * (x.dim() - 1)))
        out = torch.where(chosen, add_noise(x, levels, generator), out)
    return out


def corrupt(
    x: torch.Tensor,
    noise: str,
    level: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply the named corruption; ``level=None`` takes the reference default for that noise."""
    if noise == "none":
        return x.clone()
    if noise not in DEFAULT_LEVELS:
        raise ValueError(f"unknown noise {noise!r}; choose one of {', '.join(NOISE_TYPES)}")
    level = validate_level(DEFAULT_LEVELS[noise] if level is None else level)
    if noise == "mixed":
        return add_mixed_noise(x, level, generator)
    return _SPECIALISTS[noise](x, level, generator)
