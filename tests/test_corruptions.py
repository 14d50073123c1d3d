"""The corruptions: their statistics, range, reproducibility and level validation."""

from __future__ import annotations

import math

import pytest
import torch

from models.corruptions import (
    DEFAULT_LEVELS,
    FAINT_SIGMA,
    NOISE_TYPES,
    add_mixed_photo_noise,
    corrupt,
    make_generator,
)


def grey(n: int = 64, size: int = 28) -> torch.Tensor:
    # mid-grey keeps Gaussian noise of small σ away from the clamp, so its spread is measurable
    return torch.full((n, 1, size, size), 0.5)


@pytest.mark.parametrize("sigma", [0.05, 0.1])
def test_gaussian_noise_has_the_requested_sigma(sigma: float) -> None:
    x = grey()
    noisy = corrupt(x, "gaussian", sigma, make_generator(0))
    delta = noisy - x
    assert delta.std().item() == pytest.approx(sigma, rel=0.02)
    assert abs(delta.mean().item()) < 0.002


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_salt_pepper_replaces_the_requested_fraction_with_even_odds(p: float) -> None:
    x = grey()
    noisy = corrupt(x, "salt_pepper", p, make_generator(1))
    salt, pepper = (noisy == 1).float().mean().item(), (noisy == 0).float().mean().item()
    assert salt + pepper == pytest.approx(p, abs=0.01)
    assert salt == pytest.approx(pepper, abs=0.01)
    assert torch.all((noisy == 0) | (noisy == 1) | (noisy == x))


@pytest.mark.parametrize("p", [0.1, 0.3, 0.7])
def test_masking_zeroes_the_requested_fraction(p: float) -> None:
    x = grey()
    noisy = corrupt(x, "masking", p, make_generator(2))
    assert (noisy == 0).float().mean().item() == pytest.approx(p, abs=0.01)
    assert torch.all((noisy == 0) | (noisy == x))


def test_mixed_gives_each_image_one_type_and_a_level_up_to_the_maximum() -> None:
    x = grey(n=300)
    noisy = corrupt(x, "mixed", 0.5, make_generator(3))
    kinds = []
    for image in noisy:
        values = set(image.unique().tolist())
        if values <= {0.0, 0.5, 1.0} and 1.0 in values:
            kinds.append("salt_pepper")
            assert (image != 0.5).float().mean() <= 0.5 + 0.05
        elif values <= {0.0, 0.5}:
            kinds.append("masking")
            assert (image == 0).float().mean() <= 0.5 + 0.05
        else:
            kinds.append("gaussian")
            assert (image - 0.5).std() <= 0.5
    counts = {k: kinds.count(k) for k in ("gaussian", "salt_pepper", "masking")}
    assert all(c > 60 for c in counts.values()), counts


@pytest.mark.parametrize("share", [None, 0.85], ids=["default-half", "share-0.85"])
def test_mixed_photo_draws_gaussian_for_its_share_up_to_the_level_and_impulses_up_to_half(share: float | None) -> None:
    x = grey(n=300)
    level = DEFAULT_LEVELS["mixed_photo"]
    assert level == 55 / 255
    if share is None:  # the registered noise, as /corrupt and a plain dae-train --noise mixed_photo draw it
        noisy, share = corrupt(x, "mixed_photo", None, make_generator(3)), 0.5
    else:  # dae-train --gaussian-share
        noisy = add_mixed_photo_noise(x, level, make_generator(3), gaussian_share=share)
    counts, impulse_fractions = {"gaussian": 0, "salt_pepper": 0, "masking": 0}, []
    for image in noisy:
        values = set(image.unique().tolist())
        if values <= {0.0, 0.5, 1.0} and 1.0 in values:
            counts["salt_pepper"] += 1
            impulse_fractions.append((image != 0.5).float().mean().item())
        elif values <= {0.0, 0.5}:
            counts["masking"] += 1
            impulse_fractions.append((image == 0).float().mean().item())
        else:
            counts["gaussian"] += 1
            assert (image - 0.5).std() <= level * 1.05
    # the share Gaussian, the rest evenly between the impulse types (within 3.5 binomial sd of 300 draws)
    for kind, p in (("gaussian", share), ("salt_pepper", (1 - share) / 2), ("masking", (1 - share) / 2)):
        assert abs(counts[kind] - 300 * p) <= 3.5 * math.sqrt(300 * p * (1 - p)), counts
    # the impulse types reach past the Gaussian bound, up to half the pixels
    assert max(impulse_fractions) <= 0.5 + 0.05 and max(impulse_fractions) > 0.4


def test_faint_share_sends_that_share_of_the_gaussian_images_below_faint_sigma_and_leaves_the_rest() -> None:
    x, level = grey(n=2000), DEFAULT_LEVELS["mixed_photo"]
    default = corrupt(x, "mixed_photo", None, make_generator(5))
    # no faint share draws nothing more: the default noise, and every run trained with it, stays the same
    assert torch.equal(add_mixed_photo_noise(x, level, make_generator(5), faint_share=0.0), default)
    noisy = add_mixed_photo_noise(x, level, make_generator(5), gaussian_share=1.0, faint_share=0.4)
    sigmas = (noisy - 0.5).flatten(1).std(dim=1)
    faint = sigmas <= FAINT_SIGMA * 1.05  # a 28×28 image's σ is measured to ~2.5%
    # the 0.4 share, plus the 1.05/11 of the others that σ uniform up to 55/255 puts there anyway
    p = 0.4 + 0.6 * 1.05 / 11
    assert abs(faint.sum().item() - 2000 * p) <= 3.5 * math.sqrt(2000 * p * (1 - p)), faint.sum()
    assert sigmas.max() > 40 / 255, "the other Gaussian images still reach up to the level"


@pytest.mark.parametrize("noise", NOISE_TYPES)
def test_values_stay_in_unit_range_with_shape_dtype_and_device_kept(noise: str) -> None:
    x = torch.rand(16, 1, 20, 33)
    noisy = corrupt(x, noise, 1.0 if noise != "none" else None, make_generator(4))
    assert noisy.shape == x.shape and noisy.dtype == x.dtype and noisy.device == x.device
    assert noisy.min() >= 0 and noisy.max() <= 1


@pytest.mark.parametrize("noise", ["gaussian", "salt_pepper", "masking", "mixed", "mixed_photo"])
def test_same_seed_same_output_other_seed_other_output(noise: str) -> None:
    x = torch.rand(8, 1, 28, 28)
    a = corrupt(x, noise, 0.3, make_generator(7))
    b = corrupt(x, noise, 0.3, make_generator(7))
    c = corrupt(x, noise, 0.3, make_generator(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("level", [-0.01, 1.01, math.nan, math.inf, "0.3", True])
def test_bad_levels_are_errors_not_clamps(level: object) -> None:
    with pytest.raises(ValueError, match="level"):
        corrupt(grey(2), "gaussian", level)  # type: ignore[arg-type]


def test_unknown_noise_is_an_error_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="gaussian"):
        corrupt(grey(2), "speckle", 0.1)


@pytest.mark.cuda
@pytest.mark.parametrize("noise", ["gaussian", "salt_pepper", "masking", "mixed", "mixed_photo"])
def test_on_cuda_reproducible_and_statistically_like_cpu(noise: str) -> None:
    # The two devices draw different streams: enough images that the blind noises' per-image choice of kind averages
    # out (at 256, two CPU seeds' zero fractions differ by up to 0.02 under mixed_photo; at 4096, under 0.006).
    x = grey(n=4096)
    on_gpu = [corrupt(x.cuda(), noise, 0.2, make_generator(5, "cuda")) for _ in range(2)]
    assert on_gpu[0].is_cuda and torch.equal(on_gpu[0], on_gpu[1])
    on_cpu = corrupt(x, noise, 0.2, make_generator(5))
    for stat in (torch.mean, torch.std, lambda t: (t == 0).float().mean()):
        assert stat(on_gpu[0].cpu()).item() == pytest.approx(stat(on_cpu).item(), abs=0.01)
