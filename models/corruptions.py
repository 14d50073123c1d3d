"""Corruptions that turn a clean batch x into the noisy x̃ a denoising autoencoder learns from.

All are vectorised over the batch, run on the tensor's own device, draw from an explicit
``torch.Generator`` (so a seed reproduces them) and keep values in [0, 1]. ``level`` may be a float
or a per-image tensor of shape (N,), which is how ``mixed`` gives every image its own level.

``NOISES`` is the one list of noise types: the training and evaluation commands, the HTTP API (its field
values, its /docs text, ``GET /noises``) and the demo page all read it. Adding a noise type is one
function here with ``@register_noise``; ``mixed`` draws among every registered specialist.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Level = float | torch.Tensor
AddNoise = Callable[[torch.Tensor, Level, "torch.Generator | None"], torch.Tensor]


@dataclass(frozen=True)
class Noise:
    """One corruption: its name, how people read it, what its level means and its reference default."""

    name: str
    label: str
    level_means: str
    default_level: float
    apply: AddNoise
    specialist: bool = True  # one of the types ``mixed`` draws among
    # A photo's level when none is given (and where the demo page starts one): inside what the photo model
    # trained on (Gaussian's default_level, 0.3, is σ 76/255, past the photo model's 55/255).
    photo_level: float = 0.0


NOISES: dict[str, Noise] = {}  # in registration order, the order people are shown them


def register_noise(
    name: str,
    label: str,
    level_means: str,
    default_level: float,
    specialist: bool = True,
    photo_level: float | None = None,
) -> Callable[[AddNoise], AddNoise]:
    """Add a corruption to ``NOISES`` under ``name`` (decorator); ``photo_level`` defaults to ``default_level``."""

    def wrap(apply: AddNoise) -> AddNoise:
        if name in NOISES:
            raise ValueError(f"noise {name!r} is already registered")
        photo = default_level if photo_level is None else photo_level
        NOISES[name] = Noise(name, label, level_means, default_level, apply, specialist, photo)
        return apply

    return wrap


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


# photo_level 0.1: σ ≈ 25/255, the middle of the photo panel (training.photo_eval.PHOTO_PANEL)
@register_noise("gaussian", "Gaussian", "σ of the zero-mean Gaussian noise added (then clamped)", 0.3, photo_level=0.1)
def add_gaussian_noise(x: torch.Tensor, level: Level, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + N(0, level²), clamped to [0, 1]."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + _per_image(level, x) * noise).clamp_(0.0, 1.0)


@register_noise("salt_pepper", "salt & pepper", "probability a pixel is replaced by 0 or 1", 0.2)
def add_salt_pepper_noise(x: torch.Tensor, level: Level, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each pixel, with probability ``level``, becomes 0 or 1 with even odds."""
    replaced = _uniform(x, generator) < _per_image(level, x)
    salt = (_uniform(x, generator) < 0.5).to(x.dtype)
    return torch.where(replaced, salt, x)


@register_noise("masking", "masking", "probability a pixel is set to 0", 0.3)
def add_masking_noise(x: torch.Tensor, level: Level, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each pixel, with probability ``level``, is set to 0."""
    kept = _uniform(x, generator) >= _per_image(level, x)
    return x * kept.to(x.dtype)


def mixed_noise_with_levels(
    x: torch.Tensor, level: Level, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mixed`` noise and the level each image drew (N,): what a level-aware model is told."""
    specialists = [noise.apply for noise in NOISES.values() if noise.specialist]
    n = x.shape[0]
    kinds = torch.randint(len(specialists), (n,), generator=generator, device=x.device)
    levels = torch.rand((n,), generator=generator, device=x.device, dtype=x.dtype) * level
    out = x
    # Computing every type for the whole batch and selecting keeps this one vectorised pass.
    for index, add_noise in enumerate(specialists):
        chosen = (kinds == index).view(-1, *([1] * (x.dim() - 1)))
        out = torch.where(chosen, add_noise(x, levels, generator), out)
    return out, levels


@register_noise(
    "mixed", "mixed (blind)", "upper bound of the level each image draws", 0.5, specialist=False, photo_level=0.2
)
def add_mixed_noise(x: torch.Tensor, level: Level, generator: torch.Generator | None = None) -> torch.Tensor:
    """Blind-denoising noise: each image draws a specialist type and a level uniform in [0, ``level``]."""
    return mixed_noise_with_levels(x, level, generator)[0]


PHOTO_MAX_P = 0.5  # the largest salt & pepper or masking fraction a ``mixed_photo`` image draws
# Half the ``mixed_photo`` images get Gaussian noise, a quarter each impulse type: Gaussian is the hard one for
# a photo model (the impulse types cleared their targets by 5 dB and more at a third each; Gaussian did not).
# ``dae-train --gaussian-share`` sets another share (README, "Training and evaluation", for what 0.85 did).
PHOTO_GAUSSIAN_SHARE = 0.5
# σ uniform up to 55/255 gives few patches with faint noise, and under ‖x − f(x̃)‖² their small errors hardly
# count beside the noisy ones': the model learnt to smooth away texture a nearly clean photo keeps (-4 dB at
# σ 1/255 on held-out train400). ``dae-train --faint-share`` sends that share of the Gaussian patches up to here.
FAINT_SIGMA = 5 / 255


def add_mixed_photo_noise(
    x: torch.Tensor,
    level: Level,
    generator: torch.Generator | None = None,
    gaussian_share: float = PHOTO_GAUSSIAN_SHARE,
    faint_share: float = 0.0,
) -> torch.Tensor:
    """Blind noise for photos: each image draws Gaussian (σ uniform in [0, ``level``]; ``gaussian_share`` of
    the images, half by default), salt & pepper or masking (p uniform in [0, 0.5]; the rest, evenly).
    ``faint_share`` of the Gaussian images draw σ up to ``FAINT_SIGMA`` instead (none by default).

    Unlike ``mixed`` the impulse types keep their own range: a photo model trained for σ up to 55/255 must
    still see half its pixels replaced or dropped.
    """
    n = x.shape[0]
    draw = torch.rand((n,), generator=generator, device=x.device)
    impulse_share = (1 - gaussian_share) / 2
    kinds = (draw >= gaussian_share).long() + (draw >= gaussian_share + impulse_share).long()
    fraction = torch.rand((n,), generator=generator, device=x.device, dtype=x.dtype)
    sigma = fraction * level
    if faint_share > 0:  # drawn only when asked, so the default keeps its random stream
        faint = torch.rand((n,), generator=generator, device=x.device) < faint_share
        sigma = torch.where(faint, fraction * FAINT_SIGMA, sigma)
    ranges = (
        (add_gaussian_noise, sigma),
        (add_salt_pepper_noise, fraction * PHOTO_MAX_P),
        (add_masking_noise, fraction * PHOTO_MAX_P),
    )
    out = x
    for index, (add_noise, levels) in enumerate(ranges):  # every type over the whole batch, then select
        chosen = (kinds == index).view(-1, *([1] * (x.dim() - 1)))
        out = torch.where(chosen, add_noise(x, levels, generator), out)
    return out


# Registered apart from its definition: the registry's signature has no ``gaussian_share`` or ``faint_share``
# (``dae-train`` calls the function itself for them), and a decorator would hide it from the type checker.
register_noise(
    "mixed_photo",
    "mixed (photos)",
    f"upper bound of the Gaussian σ each image draws (salt & pepper and masking draw p up to {PHOTO_MAX_P})",
    55 / 255,
    specialist=False,
)(add_mixed_photo_noise)


@register_noise("none", "none", "unused", 0.0, specialist=False)
def no_noise(x: torch.Tensor, level: Level, generator: torch.Generator | None = None) -> torch.Tensor:
    """The clean image itself: what a standard (not denoising) autoencoder trains on."""
    return x.clone()


# Views of NOISES, kept for the many callers that only need names or defaults.
DEFAULT_LEVELS: dict[str, float] = {noise.name: noise.default_level for noise in NOISES.values()}
NOISE_TYPES: tuple[str, ...] = tuple(NOISES)


def corrupt(
    x: torch.Tensor,
    noise: str,
    level: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply the named corruption; ``level=None`` takes the reference default for that noise."""
    if noise not in NOISES:
        raise ValueError(f"unknown noise {noise!r}; choose one of {', '.join(NOISES)}")
    spec = NOISES[noise]
    if noise == "none":
        return spec.apply(x, 0.0, generator)
    return spec.apply(x, validate_level(spec.default_level if level is None else level), generator)
