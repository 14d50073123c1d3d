"""Scores over several training seeds and noise seeds: what the tables average and the bootstrap resamples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.evaluate import EVAL_SEED
from training.study.config import StudyConfig
from training.study.findings import diff
from training.study.markdown import caption, cell
from training.study.scoring import GAUSSIAN, Scorer
from training.study.scoring import TestSet as StudyTestSet
from training.study.zoo import base_name, seeded


class Blend(nn.Module):
    """A stand-in model: the noisy image pulled towards grey by ``weight`` (one 'training seed' per weight)."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(weight), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (1 - self.weight) * x + self.weight * 0.5


def test_each_training_seed_meets_its_own_noise_draw_and_the_noisy_input_meets_every_draw(
    mnist_test_images: torch.Tensor,
) -> None:
    test = StudyTestSet("mnist", mnist_test_images[:30], torch.zeros(30, dtype=torch.long))
    models = {"m": Blend(0.1), "m@s1": Blend(0.3), "m@s2": Blend(0.5), "one": Blend(0.2)}
    seeds = (EVAL_SEED, EVAL_SEED + 100)
    names = {"m": [seeded("m", s) for s in range(3)], "one": ["one"]}
    scorer = Scorer(models.__getitem__, names.__getitem__, seeds)
    # three seeds on two draws: seed k on draw k mod 2; one seed meets both draws, as does the noisy input
    assert scorer.draws("m") == [("m", [EVAL_SEED]), ("m@s1", [EVAL_SEED + 100]), ("m@s2", [EVAL_SEED])]
    assert scorer.draws("one") == [("one", list(seeds))] and scorer.draws(None) == [(None, list(seeds))]
    score, noisy = scorer.score("m", test, GAUSSIAN), scorer.score(None, test, GAUSSIAN)
    assert score.values().shape == (3, 30) and noisy.values().shape == (1, 30)
    assert score.seed_sd is not None and score.seed_sd > 0 and noisy.seed_sd is None

    def alone(name: str, draws: tuple[int, ...]) -> np.ndarray:
        return Scorer(models.__getitem__, lambda n: [n], draws).score(name, test, GAUSSIAN).values()[0]

    # seed 0 on dae-eval's draw (the cards' numbers), seed 1 on the second; a one-seed model's row is the mean of both
    assert np.allclose(score.values()[0], alone("m", seeds[:1]), atol=1e-5)
    assert np.allclose(score.values()[1], alone("m@s1", seeds[1:]), atol=1e-5)
    both = scorer.score("one", test, GAUSSIAN).values()[0]
    assert np.allclose(both, (alone("one", seeds[:1]) + alone("one", seeds[1:])) / 2, atol=1e-4)
    assert not np.allclose(alone("one", seeds[:1]), alone("one", seeds[1:]))  # the draws differ
    assert np.isclose(score.psnr, score.values().mean(), atol=1e-4)
    assert "±" in cell(score) and "±" not in cell(noisy)
    assert np.isclose(diff(score, noisy).delta, score.psnr - noisy.psnr)


def test_seeded_names_and_the_seed_settings() -> None:
    assert seeded("mlp-mixed", 0) == "mlp-mixed" and seeded("mlp-mixed", 2) == "mlp-mixed@s2"
    assert base_name("mlp-gaussian-0.1@s1") == "mlp-gaussian-0.1"
    paths = (Path("data"), Path("report.md"), Path("cache"), Path("checkpoints"))
    full, quick = StudyConfig(*paths), StudyConfig(*paths, quick=True)
    assert full.seeds == (0, 1, 2) and full.eval_seeds == (1234, 1334, 1434)
    assert quick.seeds == (0,) and quick.eval_seeds == (1234,)
    assert StudyConfig(*paths, quick=True, train_seeds=2, noise_seeds=2).eval_seeds == (1234, 1334)


def test_captions_name_every_noise_seed(mnist_test_images: torch.Tensor) -> None:
    test = StudyTestSet("mnist", mnist_test_images[:5], torch.zeros(5, dtype=torch.long))
    assert "noise seed 1234; one training seed" in caption(test, "dae-report")
    paired = caption(test, "dae-report", seeds=(1234, 1334), train_seeds=3)
    assert "noise seeds 1234, 1334; 3 training seeds per model; training seed k on the k-th draw" in paired
