"""Settings of one study run: where things are, and how big a run (full or ``--quick``) is."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.evaluate import EVAL_SEED

# Noise seeds beyond the first sit 100 apart: far from the streams seeded EVAL_SEED + 1 (iterative re-noising)
# and EVAL_SEED + 7 (classical tuning), so no test noise repeats another draw of the run.
NOISE_SEED_STEP = 100


@dataclass(frozen=True)
class Recipe:
    """How the study trains one architecture; ``arch_args`` left out keep the builder's defaults."""

    epochs: int
    batch_size: int
    lr: float
    schedule: str = "constant"
    arch_args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scale:
    """The sizes that differ between the full study and the ``--quick`` smoke run."""

    recipes: Mapping[str, Recipe]  # by architecture
    train_limit: int | None  # train images per model (None: the whole split)
    test_limit: int | None  # the first N test images (None: the whole split)
    classical_sample: int  # test images for the classical-denoiser table
    tuning_images: int  # train images on which classical parameters are tuned
    probe_train_limit: int | None  # clean train images for the linear probe (None: all)
    probe_labels_per_class: tuple[int, ...]  # the probe's few-label regimes (beside all labels)
    probe_draws: int  # label subsets drawn per few-label regime
    figure_digits: int  # columns of the example grids
    train_seeds: int  # training seeds of every model (seed 0 of a shipped model is its shipped checkpoint)
    noise_seeds: int  # noise draws of every test condition
    timing_repeats: int  # timed calls per method and batch size in the cost table (the median is reported)
    timing_batch: int  # the batch the cost table's throughput is measured at (64; smaller in a smoke run)


# The conv recipe is the shipped conv-blind's (checkpoints/train_all.sh: 24 channels, 20 epochs, cosine from
# 2e-3), so that seeds 1 and 2 of conv-blind and the conv specialists are trained exactly as the shipped model.
CONV = Recipe(20, 128, 2e-3, "cosine", {"channels": 24})
FULL = Scale(
    recipes={"mlp": Recipe(10, 128, 1e-3), "conv": CONV, "conv-level": CONV},
    train_limit=None, test_limit=None, classical_sample=500, tuning_images=200, probe_train_limit=None,
    probe_labels_per_class=(10, 100), probe_draws=5,
    figure_digits=10, train_seeds=3, noise_seeds=3, timing_repeats=20, timing_batch=64,
)  # fmt: skip
# Tiny on purpose: the whole fixture (600 train, 200 test images), and no more if pointed at the real data.
QUICK_CONV = Recipe(1, 32, 2e-3, "cosine", {"channels": 4})
QUICK = Scale(
    recipes={"mlp": Recipe(2, 32, 1e-3), "conv": QUICK_CONV, "conv-level": QUICK_CONV},
    train_limit=600, test_limit=100, classical_sample=4, tuning_images=12, probe_train_limit=600, figure_digits=8,
    probe_labels_per_class=(2, 5), probe_draws=2,
    train_seeds=1, noise_seeds=1, timing_repeats=2, timing_batch=8,
)  # fmt: skip


@dataclass(frozen=True)
class StudyConfig:
    """What ``dae-report`` was asked to do."""

    data_root: Path
    out: Path
    cache: Path
    checkpoint_dir: Path
    device: str = "auto"
    quick: bool = False
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    command: str = "dae-report"
    train_seeds: int | None = None  # training seeds per model (None: the scale's, 3 full, 1 quick)
    noise_seeds: int | None = None  # noise draws per test condition (None: the scale's, 3 full, 1 quick)
    train_only: tuple[str, ...] = ()  # train just these models' seeds into the cache, and write no report
    only: tuple[str, ...] = ()  # re-run just these sections (anchor keys) into the existing report at ``out``

    @property
    def scale(self) -> Scale:
        return QUICK if self.quick else FULL

    @property
    def seeds(self) -> tuple[int, ...]:
        """The training seeds, 0 first: seed 0 is the shipped checkpoint where there is one."""
        return tuple(range(self.train_seeds or self.scale.train_seeds))

    @property
    def eval_seeds(self) -> tuple[int, ...]:
        """The noise seeds; the first is ``dae-eval``'s, so a one-seed table matches the model cards."""
        return tuple(EVAL_SEED + NOISE_SEED_STEP * k for k in range(self.noise_seeds or self.scale.noise_seeds))

    @property
    def figures_dir(self) -> Path:
        return self.out.parent / "figures"

    @property
    def model_cache(self) -> Path:
        # Quick models live apart so a smoke run never overwrites (or is mistaken for) the real ones.
        return self.cache / "quick" if self.quick else self.cache
