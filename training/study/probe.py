"""Features that transfer: a linear probe on raw pixels and on each autoencoder's code, with few and all labels.

The probe (``features.fit_probe``) is fitted on clean *train* images and scored on the clean test split. In a
few-label regime it sees ``k`` labelled images per class, drawn ``draws`` times with different seeds; each
test image's correctness is averaged over the draws, and each autoencoder contributes one row per training
seed, so the paired bootstrap (``stats.bootstrap``) covers test images, label draws and training seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from training.evaluate import to_float_batch
from training.study.features import FEATURE_MODELS, as_mlp, fit_probe, latents
from training.study.markdown import Table, pct
from training.study.scoring import Scorer, TestSet
from training.study.stats import bootstrap, versus

RAW = "raw pixels"
DAE, AE = FEATURE_MODELS  # the denoising and the standard autoencoder, by their labels


@dataclass
class ProbeRegimes:
    """Per-image probe correctness, (seeds, test images), by representation and then labels per class
    (``None``: every train label)."""

    correct: dict[str, dict[int | None, np.ndarray]]
    train_images: int
    draws: int

    @property
    def regimes(self) -> list[int | None]:
        return list(next(iter(self.correct.values())))

    def accuracy(self, representation: str, regime: int | None) -> float:
        return float(self.correct[representation][regime].mean())

    def regime_label(self, regime: int | None) -> str:
        return f"all {self.train_images:,} labels" if regime is None else f"{regime} labels per class"


def label_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` positions of each class, drawn without replacement, in ascending order."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def probe_correct(
    train: np.ndarray, labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray, per_class: int | None, draws: int
) -> np.ndarray:
    """Each test image's correctness, averaged over ``draws`` label subsets (one fit when every label is used)."""
    subsets = (
        [np.arange(len(labels))]
        if per_class is None
        else [label_subset(labels, per_class, seed) for seed in range(draws)]
    )
    predictions = [fit_probe(train[s], labels[s]).predict(test) for s in subsets]  # type: ignore[attr-defined]
    return np.mean([p == test_labels for p in predictions], axis=0)


def probe_regimes(
    scorer: Scorer,
    test: TestSet,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    per_class: tuple[int, ...],
    draws: int,
) -> ProbeRegimes:
    train_x = to_float_batch(train_images)
    labels, test_labels = train_labels.numpy(), test.labels.numpy()
    representations = {RAW: [(train_x.flatten(1).numpy(), test.clean.flatten(1).numpy())]}
    for label, name in FEATURE_MODELS.items():
        models = [as_mlp(scorer.model_of(seed)) for seed in scorer.seeds_of(name)]
        representations[label] = [(latents(m, train_x), latents(m, test.clean)) for m in models]
    regimes: list[int | None] = [*per_class, None]
    correct = {
        label: {
            k: np.stack([probe_correct(tr, labels, te, test_labels, k, draws) for tr, te in pairs]) for k in regimes
        }
        for label, pairs in representations.items()
    }
    return ProbeRegimes(correct, len(train_images), draws)


def probe_table(result: ProbeRegimes, caption: str) -> Table:
    header = ["representation", *(result.regime_label(k) for k in result.regimes)]
    rows = []
    for representation, by_regime in result.correct.items():
        cells = []
        for k in result.regimes:
            values = by_regime[k]
            spread = f" ±{100 * values.mean(axis=1).std(ddof=1):.1f}" if len(values) > 1 else ""
            cells.append(pct(float(values.mean())) + spread)
        rows.append([representation, *cells])
    return Table(header, rows, caption, "Linear probe accuracy by labels per class")


def probe_findings(result: ProbeRegimes) -> list[str]:
    sentences = []
    for k in result.regimes:
        dae = 100 * result.correct[DAE][k]  # in percentage points
        against = [
            versus(DAE.split(" (")[0], other.split(" (")[0], bootstrap(dae, 100 * result.correct[other][k]), "points")
            for other in (RAW, AE)
        ]
        sentences.append(f"With {result.regime_label(k)}: " + "; ".join(against) + ".")
    return sentences
