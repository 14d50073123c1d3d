"""Settings of one study run: where things are, and how big a run (full or ``--quick``) is."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
    figure_digits: int  # columns of the example grids


FULL = Scale(
    recipes={"mlp": Recipe(10, 128, 1e-3), "conv": Recipe(14, 128, 2e-3, "cosine")},
    train_limit=None, test_limit=None, classical_sample=1000, tuning_images=200, probe_train_limit=None,
    figure_digits=10,
)  # fmt: skip
# Tiny on purpose: the whole fixture (600 train, 200 test images), and no more if pointed at the real data.
QUICK = Scale(
    recipes={"mlp": Recipe(2, 32, 1e-3), "conv": Recipe(1, 32, 2e-3, "cosine", {"channels": 4})},
    train_limit=600, test_limit=100, classical_sample=4, tuning_images=12, probe_train_limit=600, figure_digits=8,
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

    @property
    def scale(self) -> Scale:
        return QUICK if self.quick else FULL

    @property
    def figures_dir(self) -> Path:
        return self.out.parent / "figures"

    @property
    def model_cache(self) -> Path:
        # Quick models live apart so a smoke run never overwrites (or is mistaken for) the real ones.
        return self.cache / "quick" if self.quick else self.cache
