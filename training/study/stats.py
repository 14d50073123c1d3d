"""Paired-bootstrap intervals on differences, and the wording of every claim the findings make from them.

Two methods scored on the same noisy images give paired per-image values; the difference of their means is
resampled over the images (the same draw for both, which is what pairing means) and, where a method has
several training seeds, over its seeds too (each method's own, since different models share no seed). The
95% interval is the 2.5th to 97.5th percentile of the resampled differences. ``scipy.stats.bootstrap``
(scipy is installed with scikit-image) resamples one level only, not images and seeds together, so this is
plain numpy, seeded so that a report reproduces to the last digit.

A claim of a win needs an interval that excludes 0; otherwise the findings say "indistinguishable".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
CHUNK = 100  # resamples drawn at once: bounds memory at CHUNK × images floats


@dataclass(frozen=True)
class Interval:
    """A difference of means (a − b) and its bootstrap interval."""

    delta: float
    lo: float
    hi: float

    @property
    def above_zero(self) -> bool:
        return self.lo > 0

    @property
    def below_zero(self) -> bool:
        return self.hi < 0

    @property
    def significant(self) -> bool:
        return self.above_zero or self.below_zero

    def flipped(self) -> Interval:
        return Interval(-self.delta, -self.hi, -self.lo)

    def render(self, unit: str = "dB") -> str:
        """``+1.20 dB [+0.98, +1.41]`` (PSNR) or ``+0.012 [+0.008, +0.015]`` (SSIM, ``unit=""``)."""
        digits = 2 if unit else 3
        text = f"{signed(self.delta, digits)}{' ' + unit if unit else ''}"
        return f"{text} [{signed(self.lo, digits)}, {signed(self.hi, digits)}]"


def signed(value: float, digits: int = 2) -> str:
    """Always signed, with a true minus sign, so a difference never reads as a table value."""
    return f"{'+' if value >= 0 else '−'}{abs(value):.{digits}f}"


def _as_seeds_by_images(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"expected per-image values shaped (images,) or (seeds, images), got {array.shape}")
    return array


def _seed_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Per-image means over each resample's draw of training seeds: (resamples, images)."""
    seeds = len(values)
    if seeds == 1:
        return np.broadcast_to(values[0], (resamples, values.shape[1]))
    drawn = rng.integers(0, seeds, size=(resamples, seeds))
    weights = np.stack([np.bincount(row, minlength=seeds) for row in drawn]) / seeds
    return weights @ values


def bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    paired: bool = True,
    resamples: int = 2000,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> Interval:
    """Interval for mean(a) − mean(b); ``a`` and ``b`` are per-image values, (images,) or (seeds, images).

    ``paired``: the same images in the same order (one image draw for both); else two independent samples
    (e.g. MNIST against Fashion-MNIST), each resampled on its own.
    """
    a2, b2 = _as_seeds_by_images(a), _as_seeds_by_images(b)
    if paired and a2.shape[1] != b2.shape[1]:
        raise ValueError(f"paired values need the same images: {a2.shape[1]} against {b2.shape[1]}")
    rng = np.random.default_rng(seed)
    deltas = np.empty(resamples)
    for start in range(0, resamples, CHUNK):
        r = min(CHUNK, resamples - start)
        a_means, b_means = _seed_means(a2, r, rng), _seed_means(b2, r, rng)
        picks_a = rng.integers(0, a2.shape[1], size=(r, a2.shape[1]))
        picks_b = picks_a if paired else rng.integers(0, b2.shape[1], size=(r, b2.shape[1]))
        deltas[start : start + r] = np.take_along_axis(a_means, picks_a, axis=1).mean(axis=1) - np.take_along_axis(
            b_means, picks_b, axis=1
        ).mean(axis=1)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(deltas, [tail, 1 - tail])
    return Interval(float(a2.mean() - b2.mean()), float(lo), float(hi))


def versus(a: str, b: str, interval: Interval, unit: str = "dB") -> str:
    """One comparison in words: a win only when the interval excludes 0, else "indistinguishable"."""
    if interval.above_zero:
        return f"{a} beats {b} by {interval.render(unit)}"
    if interval.below_zero:
        return f"{b} beats {a} by {interval.flipped().render(unit)}"
    return f"{a} and {b} are indistinguishable (Δ {interval.render(unit)})"


def against_input(interval: Interval, unit: str = "dB") -> str:
    """A model's output against its own noisy input: better, worse, or no measurable change."""
    if interval.above_zero:
        return f"better than its input (Δ {interval.render(unit)})"
    if interval.below_zero:
        return f"worse than its input (Δ {interval.render(unit)})"
    return f"not measurably different from its input (Δ {interval.render(unit)})"


@dataclass(frozen=True)
class Ranking:
    """The leader of a set of methods and how it compares with each of the others."""

    leader: str
    against: dict[str, Interval]  # other method → interval of leader − other

    @property
    def tied(self) -> list[str]:
        """Methods whose difference from the leader is not distinguishable from 0, closest first."""
        return sorted((m for m, iv in self.against.items() if not iv.significant), key=lambda m: self.against[m].delta)

    @property
    def clear(self) -> bool:
        return not self.tied

    @property
    def runner_up(self) -> str | None:
        return min(self.against, key=lambda m: self.against[m].delta) if self.against else None

    def sentence(self, short: Callable[[str], str] = str) -> str:
        """``X is best (ahead of Y by …)`` only when X is ahead of every other method; else the tie."""
        runner = self.runner_up
        if runner is None:
            return f"{short(self.leader)} is the only method"
        if self.clear:
            return f"{short(self.leader)} is best ({self.against[runner].render()} ahead of {short(runner)})"
        names = ", ".join(short(m) for m in [self.leader, *self.tied])
        nearest = self.tied[0]
        return (
            f"{names} are indistinguishable at the top ({short(self.leader)} − {short(nearest)}: "
            f"Δ {self.against[nearest].render()})"
        )


def rank(values: Mapping[str, np.ndarray], resamples: int = 2000) -> Ranking:
    """Rank methods by mean; the leader is compared, paired, with every other method."""
    if not values:
        raise ValueError("nothing to rank")
    leader = max(values, key=lambda m: float(np.mean(values[m])))
    against = {m: bootstrap(values[leader], v, resamples=resamples) for m, v in values.items() if m != leader}
    return Ranking(leader, against)


def mean_over(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Per-image means over several conditions on the same images (e.g. a row of a table), seed by seed."""
    stacked = [_as_seeds_by_images(a) for a in arrays]
    if len({a.shape for a in stacked}) != 1:
        raise ValueError(f"conditions differ in seeds or images: {sorted({a.shape for a in stacked})}")
    return np.mean(stacked, axis=0)
