"""The paired bootstrap behind every claim of the report, and the wording it allows."""

from __future__ import annotations

import numpy as np
import pytest

from training.study.stats import Interval, Ranking, against_input, bootstrap, mean_over, rank, versus


def per_image(n: int = 400, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(20.0, 3.0, n)


def test_identical_methods_give_an_interval_around_zero() -> None:
    a = per_image()
    interval = bootstrap(a, a.copy())
    assert interval.delta == 0.0 and interval.lo <= 0.0 <= interval.hi
    assert not interval.significant


def test_a_clear_shift_gives_an_interval_that_excludes_zero() -> None:
    a = per_image()
    b = a - 0.5 + np.random.default_rng(1).normal(0.0, 0.2, len(a))  # a is better by about 0.5 dB per image
    interval = bootstrap(a, b)
    assert interval.above_zero and 0.4 < interval.lo < interval.delta < interval.hi < 0.6
    assert bootstrap(b, a).below_zero


def test_pairing_is_what_makes_a_small_shift_visible() -> None:
    # Images differ far more from each other (σ 3 dB) than the methods do on each image: only a paired
    # comparison sees the 0.1 dB shift.
    a = per_image(n=300)
    b = a - 0.1 + np.random.default_rng(2).normal(0.0, 0.05, len(a))
    assert bootstrap(a, b).above_zero
    assert not bootstrap(a, b, paired=False).significant


def test_the_interval_is_seeded_and_deterministic() -> None:
    a, b = per_image(seed=3), per_image(seed=4)
    assert bootstrap(a, b) == bootstrap(a, b)
    assert bootstrap(a, b, seed=1) != bootstrap(a, b)


def test_training_seeds_widen_the_interval() -> None:
    # Three training seeds whose means differ by ±0.3 dB: resampling the seeds must show that spread.
    a = per_image()
    seeds = np.stack([a + offset for offset in (-0.3, 0.0, 0.3)])
    b = a - 0.2
    one_seed = bootstrap(seeds[1:2], b)
    three = bootstrap(seeds, b)
    assert three.hi - three.lo > one_seed.hi - one_seed.lo
    assert np.isclose(three.delta, 0.2)


def test_paired_values_must_cover_the_same_images() -> None:
    with pytest.raises(ValueError, match="same images"):
        bootstrap(per_image(n=10), per_image(n=11))
    assert bootstrap(per_image(n=10), per_image(n=11), paired=False).delta != 0


def test_it_agrees_with_scipy_on_one_level() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    a, b = per_image(seed=5), per_image(seed=6)
    ours = bootstrap(a, b, resamples=4000)
    theirs = scipy_stats.bootstrap(
        (a, b), lambda x, y: np.mean(x - y), paired=True, vectorized=False, n_resamples=4000,
        method="percentile", random_state=0,
    ).confidence_interval  # fmt: skip
    assert abs(ours.lo - theirs.low) < 0.1 and abs(ours.hi - theirs.high) < 0.1


def test_no_win_is_claimed_inside_an_interval() -> None:
    tie = Interval(0.02, -0.01, 0.05)
    text = versus("A", "B", tie)
    assert "indistinguishable" in text and "beats" not in text and "best" not in text
    assert versus("A", "B", Interval(0.3, 0.1, 0.5)).startswith("A beats B by +0.30 dB [+0.10, +0.50]")
    assert versus("A", "B", Interval(-0.3, -0.5, -0.1)).startswith("B beats A by +0.30 dB")
    assert against_input(tie).startswith("not measurably different")
    assert against_input(Interval(-1.0, -1.2, -0.8)).startswith("worse than its input (Δ −1.00 dB")


def test_a_ranking_says_best_only_when_the_leader_is_clear_of_every_other() -> None:
    tied = Ranking("A", {"B": Interval(0.01, -0.02, 0.04), "C": Interval(1.0, 0.8, 1.2)})
    assert "best" not in tied.sentence() and "A, B are indistinguishable at the top" in tied.sentence()
    clear = Ranking("A", {"B": Interval(0.3, 0.1, 0.5), "C": Interval(1.0, 0.8, 1.2)})
    assert clear.sentence().startswith("A is best (+0.30 dB [+0.10, +0.50] ahead of B)")


def test_rank_leads_with_the_highest_mean_and_compares_it_with_the_rest() -> None:
    a = per_image()
    ranking = rank({"low": a - 1.0, "high": a + 1.0, "same": a + 1.0})
    assert ranking.leader in ("high", "same") and not ranking.clear
    assert ranking.against["low"].above_zero


def test_mean_over_conditions_keeps_the_images_apart() -> None:
    a = np.arange(6, dtype=float).reshape(2, 3)
    assert np.array_equal(mean_over([a, a + 2]), a + 1)
    with pytest.raises(ValueError):
        mean_over([a, a[:1]])
