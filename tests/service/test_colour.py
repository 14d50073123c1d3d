"""The colour space the photo model's colour path works in (``service.colour``); the path itself is tested
through the app in test_photos.py."""

from __future__ import annotations

import itertools

import numpy as np

from service.colour import clipped_share, from_opponent, has_impulses, merge_colour_estimates, to_opponent


def test_every_colour_maps_into_the_models_range_and_back() -> None:
    corners = np.array(list(itertools.product((0.0, 1.0), repeat=3)), dtype=np.float32).T[:, :, None]  # 3×8×1
    rng = np.random.default_rng(0)
    rgb = np.concatenate([corners, rng.random((3, 8, 1), dtype=np.float32)], axis=1)
    opponent = to_opponent(rgb)
    assert opponent.min() >= 0.0 and opponent.max() <= 1.0
    np.testing.assert_allclose(from_opponent(opponent), rgb, atol=1e-6)
    grey = np.full((3, 4, 4), 0.3, dtype=np.float32)
    np.testing.assert_allclose(to_opponent(grey)[1:], 0.5, atol=1e-7)  # grey has no chroma


def test_independent_channel_noise_stays_independent_across_the_opponent_planes() -> None:
    """What lets the model treat each opponent plane as a grey photo with noise of its own."""
    noise = np.random.default_rng(1).normal(0.0, 0.1, (3, 256, 256)).astype(np.float32)
    planes = to_opponent(noise).reshape(3, -1)
    correlation = np.corrcoef(planes)
    assert np.abs(correlation - np.eye(3)).max() < 0.02


def test_the_merge_keeps_to_the_rgb_estimate_where_the_noise_was_clipped() -> None:
    noisy = np.full((3, 32, 32), 0.5, dtype=np.float32)
    noisy[:, :, :16] = 0.0  # clipped on the left half
    noisy[0, :, 16:] += np.linspace(-0.2, 0.2, 16, dtype=np.float32)  # some colour on the right half
    share = clipped_share(noisy)
    assert share[:, :10].min() == 1.0 and share[:, 22:].max() == 0.0
    from_rgb = np.full_like(noisy, 0.25)
    from_opponent_planes = to_opponent(np.full_like(noisy, 0.75))
    merged = merge_colour_estimates(noisy, to_opponent(noisy), from_rgb, from_opponent_planes)
    np.testing.assert_allclose(merged[:, :, :10], 0.25, atol=1e-6)  # all the R, G, B estimate
    np.testing.assert_allclose(merged[:, :, 22:], 0.5, atol=1e-6)  # luma the mean of both, chroma the opponent's


def test_impulses_are_told_from_clipped_gaussian_noise() -> None:
    """Strong Gaussian noise clipped to 8 bits moves few extreme pixels far; sparse salt-and-pepper, many.
    (The model's answer is stood in for by the clean image, which is what it aims at.)"""
    rng = np.random.default_rng(2)
    clean = np.clip(0.5 + 0.3 * np.sin(np.arange(128) / 9.0)[None, :, None] * np.ones((3, 1, 128)), 0, 1)
    gaussian = np.clip(clean + rng.normal(0.0, 55 / 255, clean.shape), 0.0, 1.0)
    assert not has_impulses(gaussian, clean)
    salt_pepper = clean.copy()
    draw = rng.random(clean.shape)
    salt_pepper[draw < 0.005] = 0.0
    salt_pepper[(draw >= 0.005) & (draw < 0.01)] = 1.0
    assert has_impulses(salt_pepper, clean)
