"""Test sets, noise conditions, and memoised scores (PSNR and SSIM, per image) of models on them.

Single-type noise is drawn exactly as ``dae-eval`` draws it (``training.evaluate.make_noisy``), so with the
first noise seed the study's numbers equal the ones in the model cards. Every model in a table sees the
very same noisy images: noise depends only on the condition and the seed, never on the model. A score keeps
its per-image values (one row per training seed, averaged over that seed's noise draws) for the paired bootstrap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from torch import nn

from models.corruptions import NOISES, corrupt, make_generator
from models.metrics import psnr_per_image, ssim_per_image
from training.evaluate import EVAL_SEED, denoise_in_batches, make_noisy, to_float_batch
from training.study.eval_noises import EVAL_NOISES, apply_eval_noise
from training.study.level_aware import with_level

NOISE_NAMES = {
    "gaussian": "Gaussian σ",
    "salt_pepper": "salt & pepper p",
    "masking": "masking p",
    "mixed": "mixed ≤",
    **{name: noise.label for name, noise in EVAL_NOISES.items()},
}


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

    @property
    def level(self) -> float | None:
        """The level a noise-level-aware model is told: that of a single trained-on noise type, else None."""
        if len(self.steps) == 1 and self.kind in NOISES:
            return self.steps[0][1]
        return None

    def apply(self, clean: torch.Tensor, seed: int = EVAL_SEED) -> torch.Tensor:
        if len(self.steps) == 1 and self.kind in NOISES:
            noise, level = self.steps[0]
            return make_noisy(clean, noise, level, seed)  # the same draw as dae-eval
        generator = make_generator(seed)
        out = clean.clone()
        for noise, level in self.steps:
            if noise in EVAL_NOISES:
                out = apply_eval_noise(out, noise, level, generator)
            else:
                out = corrupt(out, noise, level, generator)
        return out


CLEAN = Noise(())
GAUSSIAN, SALT_PEPPER, MASKING = Noise.of("gaussian", 0.3), Noise.of("salt_pepper", 0.2), Noise.of("masking", 0.3)
REFERENCE_NOISES = (GAUSSIAN, SALT_PEPPER, MASKING)  # the reference defaults, one per type


@dataclass(frozen=True)
class Score:
    """Mean PSNR (dB) and mean SSIM over the images of a test set, seeds and noise draws.

    ``psnr_images``/``ssim_images``: (training seeds, images), each value averaged over the draws that seed met;
    ``seed_sd``: the standard deviation of the mean PSNR across training seeds (None for one seed).
    """

    psnr: float
    ssim: float
    psnr_images: np.ndarray | None = field(default=None, compare=False, repr=False)
    ssim_images: np.ndarray | None = field(default=None, compare=False, repr=False)
    seed_sd: float | None = field(default=None, compare=False)

    @classmethod
    def of(cls, output: torch.Tensor, clean: torch.Tensor) -> Score:
        psnr, ssim = per_image(output, clean)
        return cls.from_draws([[psnr]], [[ssim]])

    @classmethod
    def from_draws(cls, psnr: Sequence[Sequence[np.ndarray]], ssim: Sequence[Sequence[np.ndarray]]) -> Score:
        """From per-image values by training seed, then by the draws that seed met (their counts may differ)."""
        psnr_images = np.stack([np.mean(draws, axis=0) for draws in psnr])
        ssim_images = np.stack([np.mean(draws, axis=0) for draws in ssim])
        per_seed = psnr_images.mean(axis=1)
        sd = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else None
        return cls(float(psnr_images.mean()), float(ssim_images.mean()), psnr_images, ssim_images, sd)

    @property
    def seeds(self) -> int:
        return 1 if self.psnr_images is None else len(self.psnr_images)

    def values(self, metric: str = "psnr") -> np.ndarray:
        """Per-image values of ``psnr`` or ``ssim``, (training seeds, images)."""
        values = self.psnr_images if metric == "psnr" else self.ssim_images
        if values is None:
            raise ValueError("this score kept no per-image values")
        return values


def per_image(output: torch.Tensor, clean: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    return (
        psnr_per_image(output, clean).numpy().astype(np.float32),
        ssim_per_image(output, clean).numpy().astype(np.float32),
    )


DATASET_NAMES = {
    "mnist": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
    "sklearn-digits": "scikit-learn 8×8 digit",
    "bsd68-crops": "BSD68 crop (28×28)",
    "set12-crops": "Set12 crop (28×28)",
}


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
        name = DATASET_NAMES.get(self.dataset, self.dataset)
        test = " test" if self.dataset in ("mnist", "fashion-mnist") else ""
        if self.parent is None:
            return f"{name} test split, all {len(self):,} images" if test else f"all {len(self):,} {name} images"
        if self.sample_seed is None:
            return f"the first {len(self):,} of the {len(self.parent):,} {name}{test} images"
        return (
            f"a fixed sample of {len(self):,} of the {len(self.parent):,} {name}{test} images "
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

    def noisy(self, noise: Noise, seed: int = EVAL_SEED) -> torch.Tensor:
        """The noisy test images. A sample cuts them from the whole split's, so both hold the same pixels."""
        if self.parent is not None and self.index is not None:
            return self.parent.noisy(noise, seed)[self.index]
        return noise.apply(self.clean, seed)


class LevelTold(nn.Module):
    """A noise-level-aware model (FFDNet's idea: the level as a second input channel) told the true level."""

    def __init__(self, model: nn.Module, level: float) -> None:
        super().__init__()
        self.model, self.level = model, level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(with_level(x, torch.full((len(x),), self.level, device=x.device)))


def needs_level(model: nn.Module) -> bool:
    return getattr(model, "input_channels", 1) == 2


class Scorer:
    """Scores of models (or of the noisy input itself) on a test set, each computed once per run.

    ``seeds_of`` names every training seed of a model (``mlp-mixed`` → ``mlp-mixed``, ``mlp-mixed@s1`` …);
    a score covers all of them and every noise seed (``draws`` pairs them).
    """

    NOISY_CACHE = 4  # the noisy images of the last few (condition, seed): every model of a column reuses them

    def __init__(
        self,
        model_of: Callable[[str], nn.Module],
        seeds_of: Callable[[str], Sequence[str]] = lambda name: [name],
        noise_seeds: Sequence[int] = (EVAL_SEED,),
    ) -> None:
        self.model_of, self.seeds_of, self.noise_seeds = model_of, seeds_of, tuple(noise_seeds)
        self._scores: dict[tuple[str, str, Noise], Score] = {}
        self._noisy: dict[tuple[int, Noise, int], torch.Tensor] = {}

    def noisy(self, test: TestSet, noise: Noise, seed: int) -> torch.Tensor:
        key = (id(test), noise, seed)
        if key not in self._noisy:
            if len(self._noisy) >= self.NOISY_CACHE:
                del self._noisy[next(iter(self._noisy))]
            self._noisy[key] = test.noisy(noise, seed)
        return self._noisy[key]

    def draws(self, model: str | None) -> list[tuple[str | None, list[int]]]:
        """Which noise draws score each training seed of ``model`` (``None``: the noisy input), seed 0 first.

        Training seed k meets the k-th draw, cycling where the counts differ: three seeds on three draws cost
        three runs rather than nine, and each seed still meets noise the others do not. A model with one seed,
        and the noisy input, meet every draw. Seed 0 meets the first draw, ``dae-eval``'s, as in the cards.
        """
        names: list[str | None] = [None] if model is None else list(self.seeds_of(model))
        seeds: dict[str | None, list[int]] = {name: [] for name in names}
        for run in range(max(len(names), len(self.noise_seeds))):
            seeds[names[run % len(names)]].append(self.noise_seeds[run % len(self.noise_seeds)])
        return list(seeds.items())

    def score(self, model: str | None, test: TestSet, noise: Noise) -> Score:
        """``model=None`` scores the noisy input: the baseline every denoiser has to beat."""
        key = (model or "", test.describe(), noise)
        if key not in self._scores:
            runs = [
                [self._run(name, self.noisy(test, noise, seed), noise, test.clean) for seed in seeds]
                for name, seeds in self.draws(model)
            ]
            self._scores[key] = Score.from_draws(
                [[p for p, _ in draws] for draws in runs], [[s for _, s in draws] for draws in runs]
            )
        return self._scores[key]

    def _run(
        self, name: str | None, noisy: torch.Tensor, noise: Noise, clean: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        output = noisy if name is None else self.denoise(name, noisy, noise)
        return per_image(output, clean)

    def denoise(self, model: str, noisy: torch.Tensor, noise: Noise | None = None) -> torch.Tensor:
        """One model (a seed's name, or a base name for seed 0) on noisy images; a level-aware model is told
        the condition's level."""
        module = self.model_of(model)
        if needs_level(module):
            level = noise.level if noise is not None else None
            if level is None:
                raise ValueError(f"{model} needs the noise level, which {noise and noise.label} does not give")
            module = LevelTold(module, level)
        return denoise_in_batches(module, noisy)
