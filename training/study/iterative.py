"""Iterative denoising: feed the output back through the model k = 1…10 times.

A denoising autoencoder maps an input towards the manifold of clean digits; a second pass asks whether
its output is already on it. The variant adds a little fresh Gaussian noise before every pass after the
first, as in sampling-style iterated DAEs, to see whether that keeps the passes from collapsing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.corruptions import corrupt, make_generator
from training.evaluate import EVAL_SEED
from training.study.scoring import Noise, Score, Scorer, TestSet

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


def run_passes(
    scorer: Scorer, test: TestSet, renoise: bool, keep: int, model: str, noise: Noise
) -> tuple[list[Score], dict[int, torch.Tensor]]:
    generator = make_generator(EVAL_SEED + 1)  # its own stream: the test noise itself stays as in every table
    x = test.noisy(noise)
    scores, examples = [], {}
    for k in range(1, PASSES + 1):
        if renoise and k > 1:
            x = corrupt(x, "gaussian", RENOISE_SIGMA, generator)
        x = scorer.denoise(model, x)
        scores.append(Score.of(x, test.clean))
        if k in SHOWN_PASSES:
            examples[k] = x[:keep].clone()
    return scores, examples


def iterative_study(
    scorer: Scorer, test: TestSet, keep: int, model: str = ITERATIVE_MODEL, noise: Noise = ITERATIVE_NOISE
) -> IterativeResult:
    scores, examples = {}, {}
    for variant in VARIANTS:
        scores[variant], examples[variant] = run_passes(scorer, test, variant == "renoised", keep, model, noise)
    return IterativeResult(model, noise, scorer.score(None, test, noise), scores, examples)
