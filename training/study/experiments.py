"""The model-versus-noise experiments: score grids of models (rows) on noise conditions (columns).

Covers the headline tables (MNIST and Fashion-MNIST), denoising versus standard autoencoder, the σ
train × test sweep, the noise-type robustness matrix and blind denoising. Each returns a ``ScoreGrid``;
figures, tables and findings are made from it elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from training.study.scoring import (
    CLEAN,
    GAUSSIAN,
    MASKING,
    REFERENCE_NOISES,
    SALT_PEPPER,
    Noise,
    Score,
    Scorer,
    TestSet,
)
from training.study.zoo import SIGMAS, sweep_name

NOISY = "noisy input"  # the row (or column) of the undenoised input: what every denoiser must beat
SPECIALISTS = {"gaussian": "mlp-gaussian", "salt_pepper": "mlp-salt-pepper", "masking": "mlp-masking"}
CONV_SPECIALISTS = {"gaussian": "conv-gaussian", "salt_pepper": "conv-salt-pepper", "masking": "conv-masking"}
# Levels no specialist saw but the blind models did (``mixed`` draws every type up to 0.5): what blindness buys.
# Noise that no model saw at all is the universal-denoiser section's (``training.study.universal``).
BEYOND_SPECIALISTS = (Noise.of("salt_pepper", 0.35), Noise.of("masking", 0.45), Noise.of("gaussian", 0.45))


@dataclass
class ScoreGrid:
    """Scores by (row, column) label, in display order."""

    rows: list[str]
    cols: list[str]
    cells: dict[tuple[str, str], Score]

    def __getitem__(self, key: tuple[str, str]) -> Score:
        return self.cells[key]

    def psnr(self, rows: Sequence[str] | None = None) -> np.ndarray:
        return np.array([[self.cells[r, c].psnr for c in self.cols] for r in rows or self.rows])

    def ssim(self, rows: Sequence[str] | None = None) -> np.ndarray:
        return np.array([[self.cells[r, c].ssim for c in self.cols] for r in rows or self.rows])

    def transposed(self) -> ScoreGrid:
        return ScoreGrid(self.cols, self.rows, {(c, r): score for (r, c), score in self.cells.items()})

    def best_row(self, col: str, among: Sequence[str] | None = None) -> str:
        return max(among or self.rows, key=lambda r: self.cells[r, col].psnr)

    def best_col(self, row: str, among: Sequence[str] | None = None) -> str:
        return max(among or self.cols, key=lambda c: self.cells[row, c].psnr)


def score_grid(scorer: Scorer, test: TestSet, rows: Mapping[str, str | None], cols: Sequence[Noise]) -> ScoreGrid:
    """Rows map a label to a model name (``None``: the noisy input); columns are noise conditions."""
    # Column by column: the models of a column share the scorer's cached noisy images.
    cells = {(label, noise.label): scorer.score(model, test, noise) for noise in cols for label, model in rows.items()}
    return ScoreGrid(list(rows), [n.label for n in cols], cells)


def headline(
    scorer: Scorer, test: TestSet, noises: Sequence[Noise], columns: Mapping[str, Callable[[Noise], str | None]]
) -> ScoreGrid:
    """Rows are noises; each column picks its model for the row's noise (e.g. the matching specialist)."""
    cells = {
        (noise.label, label): scorer.score(pick(noise), test, noise)
        for noise in noises
        for label, pick in columns.items()
    }
    return ScoreGrid([n.label for n in noises], list(columns), cells)


def mnist_headline(scorer: Scorer, test: TestSet) -> ScoreGrid:
    columns: dict[str, Callable[[Noise], str | None]] = {
        NOISY: lambda _: None,
        "MLP specialist (trained on that noise)": lambda n: SPECIALISTS[n.kind],
        "U-Net specialist (trained on that noise)": lambda n: CONV_SPECIALISTS[n.kind],
        "conv-blind": lambda _: "conv-blind",
    }
    return headline(scorer, test, REFERENCE_NOISES, columns)


def fashion_headline(scorer: Scorer, test: TestSet) -> ScoreGrid:
    columns: dict[str, Callable[[Noise], str | None]] = {
        NOISY: lambda _: None,
        "mlp-fashion-gaussian (Gaussian σ 0.3)": lambda _: "mlp-fashion-gaussian",
        "conv-blind-fashion": lambda _: "conv-blind-fashion",
        "conv-blind (trained on MNIST)": lambda _: "conv-blind",
    }
    return headline(scorer, test, REFERENCE_NOISES, columns)


DAE_VS_AE_NOISES = (CLEAN, Noise.of("gaussian", 0.1), GAUSSIAN, Noise.of("gaussian", 0.5), SALT_PEPPER, MASKING)
DAE_VS_AE_ROWS: dict[str, str | None] = {
    NOISY: None,
    "standard AE (mlp-standard)": "mlp-standard",
    "denoising AE (mlp-gaussian)": "mlp-gaussian",
}


def dae_vs_ae(scorer: Scorer, test: TestSet) -> ScoreGrid:
    return score_grid(scorer, test, DAE_VS_AE_ROWS, DAE_VS_AE_NOISES)


SIGMA_NOISES = tuple(Noise.of("gaussian", s) for s in SIGMAS)


def sweep_row(sigma: float) -> str:
    return f"trained at σ {sigma:g}"


def noise_level(scorer: Scorer, test: TestSet) -> ScoreGrid:
    rows: dict[str, str | None] = {sweep_row(s): sweep_name(s) for s in SIGMAS}
    return score_grid(scorer, test, {**rows, NOISY: None}, SIGMA_NOISES)


ROBUSTNESS_ROWS: dict[str, str | None] = {
    **{name: name for name in SPECIALISTS.values()},
    "mlp-mixed": "mlp-mixed",
    "conv-blind": "conv-blind",
    NOISY: None,
}


def robustness(scorer: Scorer, test: TestSet) -> ScoreGrid:
    return score_grid(scorer, test, ROBUSTNESS_ROWS, REFERENCE_NOISES)


BLIND_ROWS: dict[str, str | None] = {
    "mlp-mixed": "mlp-mixed",
    "conv-blind": "conv-blind",
    **{name: name for name in SPECIALISTS.values()},
    NOISY: None,
}
BLIND_NOISES = (*REFERENCE_NOISES, *BEYOND_SPECIALISTS)


def blind(scorer: Scorer, test: TestSet) -> ScoreGrid:
    return score_grid(scorer, test, BLIND_ROWS, BLIND_NOISES)
