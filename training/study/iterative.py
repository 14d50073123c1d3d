"""Iterative denoising: feed the output back through the model k = 1…10 times.

A denoising autoencoder maps an input towards the manifold of clean digits; a second pass asks whether
its output is already on it. The variant adds a little fresh Gaussian noise before every pass after the
first, as in sampling-style iterated DAEs, to see whether that keeps the passes from collapsing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.corruptions import corrupt, make_generator
from training.study.scoring import Noise, Score, Scorer, TestSet, per_image

ITERATIVE_MODEL = "mlp-gaussian"
ITERATIVE_NOISE = Noise.of("gaussian", 0.5)
RENOISE_SIGMA = 0.1
PASSES = 10
SHOWN_PASSES = (1, 2, 3, 5, 10)
VARIANTS = {"plain": "output fed back as is", "renoised": f"Gaussian σ {RENOISE_SIGMA:g} added before each pass ≥ 2"}


@dataclass
class IterativeResult:
    model: str
    noise: Noise
    noisy: Score
    scores: dict[str, list[Score]]  # variant → score after k = 1…PASSES passes
    examples: dict[str, dict[int, torch.Tensor]]  # variant → k → the first few outputs

    def best_pass(self, variant: str) -> int:
        runs = self.scores[variant]
        return 1 + max(range(len(runs)), key=lambda i: runs[i].psnr)


Runs = list[tuple[np.ndarray, np.ndarray]]  # per pass: per-image PSNR and SSIM


def run_passes(
    scorer: Scorer, test: TestSet, renoise: bool, model: str, noise: Noise, seed: int, keep: int
) -> tuple[Runs, dict[int, torch.Tensor]]:
    """One trained model on one noise draw: per-image scores after every pass, and the outputs shown."""
    generator = make_generator(seed + 1)  # its own stream: the test noise itself stays as in every table
    x = scorer.noisy(test, noise, seed)
    runs, examples = [], {}
    for k in range(1, PASSES + 1):
        if renoise and k > 1:
            x = corrupt(x, "gaussian", RENOISE_SIGMA, generator)
        x = scorer.denoise(model, x)
        runs.append(per_image(x, test.clean))
        if k in SHOWN_PASSES:
            examples[k] = x[:keep].clone()
    return runs, examples


def iterative_study(
    scorer: Scorer, test: TestSet, keep: int, model: str = ITERATIVE_MODEL, noise: Noise = ITERATIVE_NOISE
) -> IterativeResult:
    """Every training seed of ``model`` on its noise draws (``Scorer.draws``); the examples are seed 0's on the
    first draw."""
    scores, examples = {}, {}
    for variant in VARIANTS:
        by_seed = [
            [run_passes(scorer, test, variant == "renoised", str(name), noise, seed, keep) for seed in seeds]
            for name, seeds in scorer.draws(model)
        ]
        examples[variant] = by_seed[0][0][1]
        scores[variant] = [
            Score.from_draws(
                [[runs[k][0] for runs, _ in draws] for draws in by_seed],
                [[runs[k][1] for runs, _ in draws] for draws in by_seed],
            )
            for k in range(PASSES)
        ]
    return IterativeResult(model, noise, scorer.score(None, test, noise), scores, examples)
