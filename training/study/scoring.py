"""Test sets, noise conditions, and memoised scores (mean PSNR and SSIM) of models on them.

Single-type noise is drawn exactly as ``dae-eval`` draws it (``training.evaluate.make_noisy`` with
the fixed seed), so the study's numbers equal the ones in the model cards. Every model in a table sees
the very same noisy images: noise depends only on the condition and the seed, never on the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from models.corruptions import corrupt, make_generator
from training.evaluate import EVAL_SEED, denoise_in_batches, make_noisy, quality, to_float_batch

NOISE_NAMES = {"gaussian": "Gaussian σ", "salt_pepper": "salt & pepper p", "masking": "masking p", "mixed": "mixed ≤"}


@dataclass(frozen=True)
class Noise:
    """A test condition: one corruption, or several applied in turn (e.g. Gaussian then masking)."""

    steps: tuple[tuple[str, float], ...]

    @classmethod
    def of(cls, noise: str, level: float) -> Noise:
        return cls(((noise, level),))

    @property
    def label(self) -> str:
        if not self.steps:
            return "clean (no noise)"
        return " then ".join(f"{NOISE_NAMES[n]} {level:g}" for n, level in self.steps)

    @property
    def kind(self) -> str:
        """The corruption's name for a single-step condition (``gaussian`` …), else ``combined``."""
        return self.steps[0][0] if len(self.steps) == 1 else ("none" if not self.steps else "combined")

    def apply(self, clean: torch.Tensor, seed: int = EVAL_SEED) -> torch.Tensor:
        if len(self.steps) == 1:
            noise, level = self.steps[0]
            return make_noisy(clean, noise, level, seed)  # the same draw as dae-eval
        generator = make_generator(seed)
        out = clean.clone()
        for noise, level in self.steps:
            out = corrupt(out, noise, level, generator)
        return out


CLEAN = Noise(())
GAUSSIAN, SALT_PEPPER, MASKING = Noise.of("gaussian", 0.3), Noise.of("salt_pepper", 0.2), Noise.of("masking", 0.3)
REFERENCE_NOISES = (GAUSSIAN, SALT_PEPPER, MASKING)  # the reference defaults, one per type


@dataclass(frozen=True)
class Score:
    """Mean PSNR (dB) and mean SSIM over the images of a test set."""

    psnr: float
    ssim: float

    @classmethod
    def of(cls, output: torch.Tensor, clean: torch.Tensor) -> Score:
        q = quality(output, clean)
        return cls(q["psnr_db"], q["ssim"])


@dataclass(eq=False)
class TestSet:
    """The test split of one data set, or a fixed sample of it, as uint8 images and labels."""

    dataset: str
    images: torch.Tensor
    labels: torch.Tensor
    parent: TestSet | None = None  # the whole split, for a sample
    index: torch.Tensor | None = None  # the sample's positions in the whole split
    sample_seed: int | None = None  # how the sample was drawn; None: the first images of the split

    @cached_property
    def clean(self) -> torch.Tensor:
        return to_float_batch(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def describe(self) -> str:
        name = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}[self.dataset]
        if self.parent is None:
            return f"{name} test split, all {len(self):,} images"
        if self.sample_seed is None:
            return f"the first {len(self):,} of the {len(self.parent):,} {name} test images"
        return (
            f"a fixed sample of {len(self):,} of the {len(self.parent):,} {name} test images "
            f"(drawn with seed {self.sample_seed})"
        )

    def sample(self, n: int, seed: int = 0) -> TestSet:
        """A fixed random sample of ``n`` images (in split order)."""
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return TestSet(self.dataset, self.images[index], self.labels[index], self, index, seed)

    def head(self, n: int | None) -> TestSet:
        """The first ``n`` images (all of them for ``None`` or a larger ``n``)."""
        if n is None or n >= len(self):
            return self
        index = torch.arange(n)
        return TestSet(self.dataset, self.images[:n], self.labels[:n], self, index)

    def noisy(self, noise: Noise) -> torch.Tensor:
        """The noisy test images. A sample cuts them from the whole split's, so both hold the same pixels."""
        if self.parent is not None and self.index is not None:
            return self.parent.noisy(noise)[self.index]
        return noise.apply(self.clean)


class Scorer:
    """Scores of models (or of the noisy input itself) on a test set, each computed once per run."""

    def __init__(self, model_of: Callable[[str], nn.Module]) -> None:
        self.model_of = model_of
        self._scores: dict[tuple[str, str, Noise], Score] = {}

    def score(self, model: str | None, test: TestSet, noise: Noise) -> Score:
        """``model=None`` scores the noisy input: the baseline every denoiser has to beat."""
        key = (model or "", test.describe(), noise)
        if key not in self._scores:
            noisy = test.noisy(noise)
            output = noisy if model is None else denoise_in_batches(self.model_of(model), noisy)
            self._scores[key] = Score.of(output, test.clean)
        return self._scores[key]

    def denoise(self, model: str, noisy: torch.Tensor) -> torch.Tensor:
        return denoise_in_batches(self.model_of(model), noisy)
