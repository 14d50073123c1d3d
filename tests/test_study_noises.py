"""The study's evaluation-only corruptions, what counts as unseen, and the level-aware U-Net."""

from __future__ import annotations

import pytest
import torch

from models.architectures import create_model
from models.corruptions import NOISES, make_generator, mixed_noise_with_levels
from training.evaluate import to_float_batch
from training.study.eval_noises import EVAL_NOISES, apply_eval_noise
from training.study.level_aware import with_level
from training.study.scoring import REFERENCE_NOISES, LevelTold, Noise
from training.study.universal import COMBINATIONS, NEW_TYPES, UNSEEN, is_unseen
from training.study.zoo import SPECS, max_trained_level

LEVELS = {"poisson": 10.0, "speckle": 0.5, "blur": 1.0, "jpeg": 10.0, "stripes": 0.3}


@pytest.fixture(scope="module")
def digits(mnist_test_images: torch.Tensor) -> torch.Tensor:
    return to_float_batch(mnist_test_images[:16])


@pytest.mark.parametrize("name", sorted(EVAL_NOISES))
def test_each_corruption_keeps_shape_and_range_and_changes_the_image(name: str, digits: torch.Tensor) -> None:
    out = apply_eval_noise(digits, name, LEVELS[name], make_generator(0))
    assert out.shape == digits.shape and out.dtype == digits.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    changed = (out - digits).abs().flatten(1).amax(dim=1) > 1e-3
    assert bool(changed.all()), f"{name} left {int((~changed).sum())} of {len(digits)} images unchanged"


@pytest.mark.parametrize("name", sorted(EVAL_NOISES))
def test_each_corruption_is_a_function_of_its_seed(name: str, digits: torch.Tensor) -> None:
    first = apply_eval_noise(digits, name, LEVELS[name], make_generator(7))
    assert torch.equal(first, apply_eval_noise(digits, name, LEVELS[name], make_generator(7)))
    if name in ("poisson", "speckle", "stripes"):  # the random ones; blur and JPEG draw nothing
        assert not torch.equal(first, apply_eval_noise(digits, name, LEVELS[name], make_generator(8)))


def test_evaluation_noises_stay_out_of_the_training_and_api_registry() -> None:
    assert not set(EVAL_NOISES) & set(NOISES)


def test_conditions_built_from_them_reproduce(digits: torch.Tensor) -> None:
    for noise in (*NEW_TYPES, *COMBINATIONS):
        assert torch.equal(noise.apply(digits, 1234), noise.apply(digits, 1234)), noise.label
        assert not torch.equal(noise.apply(digits, 1234), digits), noise.label


def test_unseen_conditions_lie_outside_every_training_range() -> None:
    assert UNSEEN and all(is_unseen(n) for n in UNSEEN)
    for noise in UNSEEN:
        for kind, level in noise.steps if len(noise.steps) == 1 else ():
            assert kind in EVAL_NOISES or level > max_trained_level(kind), noise.label
    assert not any(is_unseen(n) for n in REFERENCE_NOISES)
    # mlp-mixed and conv-blind draw every type up to 0.5: salt and pepper at 0.35 was seen.
    assert max_trained_level("salt_pepper") == 0.5
    assert not is_unseen(Noise.of("salt_pepper", 0.35))
    assert {s.noise for s in SPECS} >= {"mixed", "gaussian"}


def test_the_level_aware_unet_takes_the_level_as_a_second_channel(digits: torch.Tensor) -> None:
    model = create_model("conv-level", channels=4).eval()
    levels = torch.full((len(digits),), 0.3)
    with torch.inference_mode():
        out = model(with_level(digits, levels))
        assert out.shape == digits.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert torch.equal(LevelTold(model, 0.3)(digits), out)
        with pytest.raises(ValueError, match="2 channels"):
            model(digits)


def test_mixed_noise_with_levels_reports_the_level_each_image_drew(digits: torch.Tensor) -> None:
    noisy, levels = mixed_noise_with_levels(digits, 0.5, make_generator(0))
    assert noisy.shape == digits.shape and levels.shape == (len(digits),)
    assert float(levels.min()) >= 0.0 and float(levels.max()) <= 0.5
    assert float(noisy.min()) >= 0.0 and float(noisy.max()) <= 1.0
