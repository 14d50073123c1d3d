"""Every model the study uses: the shipped checkpoints, and those it trains into its cache.

In a full run the shipped checkpoints are used as they are and only the models nobody ships (the σ
sweep, the MLP trained on ``mixed``, the Fashion-MNIST MLP) are trained, once, into the cache: a second
run finds them there and only evaluates. ``--quick`` trains every model, tiny, from the test fixture,
so it never depends on what is in ``checkpoints/``.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from models.architectures import create_model
from models.checkpoint import CheckpointError, ModelCard, checkpoint_paths, load_checkpoint
from models.device import resolve_device
from training.study.config import StudyConfig
from training.study.log import LogFn
from training.train import TrainConfig, train

SIGMAS = (0.1, 0.2, 0.3, 0.4, 0.5)


@dataclass(frozen=True)
class ModelSpec:
    """What a model is (data set, architecture, training noise) and whether the project ships it."""

    name: str
    dataset: str
    arch: str
    noise: str
    level: float
    shipped: bool

    def matches(self, card: ModelCard) -> bool:
        level = self.level if self.noise != "none" else 0.0
        return (card.dataset, card.architecture, card.noise) == (self.dataset, self.arch, self.noise) and abs(
            card.noise_level - level
        ) < 1e-9


def sweep_name(sigma: float) -> str:
    """The σ-sweep model for one training σ; σ 0.3 is the shipped reference model."""
    return "mlp-gaussian" if abs(sigma - 0.3) < 1e-9 else f"mlp-gaussian-{sigma:g}"


SPECS: tuple[ModelSpec, ...] = (
    ModelSpec("mlp-gaussian", "mnist", "mlp", "gaussian", 0.3, shipped=True),
    ModelSpec("mlp-salt-pepper", "mnist", "mlp", "salt_pepper", 0.2, shipped=True),
    ModelSpec("mlp-masking", "mnist", "mlp", "masking", 0.3, shipped=True),
    ModelSpec("mlp-standard", "mnist", "mlp", "none", 0.0, shipped=True),
    ModelSpec("conv-blind", "mnist", "conv", "mixed", 0.5, shipped=True),
    ModelSpec("conv-blind-fashion", "fashion-mnist", "conv", "mixed", 0.5, shipped=True),
    *(ModelSpec(sweep_name(s), "mnist", "mlp", "gaussian", s, shipped=False) for s in SIGMAS if s != 0.3),
    ModelSpec("mlp-mixed", "mnist", "mlp", "mixed", 0.5, shipped=False),
    ModelSpec("mlp-fashion-gaussian", "fashion-mnist", "mlp", "gaussian", 0.3, shipped=False),
)
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


@dataclass
class Provenance:
    """Where a model came from, for the report's model table."""

    name: str
    source: str  # "shipped", "cache" or "trained now"
    path: Path
    card: ModelCard


class ModelZoo:
    """Finds, trains (where needed) and loads the study's models, each loaded once."""

    def __init__(self, cfg: StudyConfig, log: LogFn) -> None:
        self.cfg = cfg
        self.log = log
        self.device = resolve_device(cfg.device)
        self.provenance: dict[str, Provenance] = {}
        self._loaded: dict[str, nn.Module] = {}

    def prepare(self) -> None:
        """Resolve every model up front, so a missing checkpoint fails before hours of work."""
        if not self.cfg.quick:
            self._check_shipped()
        for spec in SPECS:
            self.provenance[spec.name] = self._resolve(spec)

    def model(self, name: str) -> nn.Module:
        if name not in self._loaded:
            self._loaded[name], _ = load_checkpoint(self.provenance[name].path, self.device)
        return self._loaded[name]

    def card(self, name: str) -> ModelCard:
        return self.provenance[name].card

    def _check_shipped(self) -> None:
        shipped = [s.name for s in SPECS if s.shipped]
        missing = [n for n in shipped if not checkpoint_paths(self.cfg.checkpoint_dir / n)[1].is_file()]
        if missing:
            raise CheckpointError(
                f"{self.cfg.checkpoint_dir}: shipped checkpoints missing: {', '.join(missing)}; train them with "
                f"`DATA_ROOT={self.cfg.data_root} bash checkpoints/train_all.sh {' '.join(missing)}`"
            )

    def _resolve(self, spec: ModelSpec) -> Provenance:
        if spec.shipped and not self.cfg.quick:
            path = self.cfg.checkpoint_dir / spec.name
            _, card = load_checkpoint(path, "cpu")  # verifies weights against the card
            if not spec.matches(card):
                raise CheckpointError(f"{path}: card says {card.dataset}/{card.architecture}/{card.noise} "
                                      f"{card.noise_level}, the study expects {spec}")  # fmt: skip
            return Provenance(spec.name, "shipped", path, card)
        path = self.cfg.model_cache / spec.name
        recipe = self.recipe(spec, path)
        cached = self._cached_card(path, recipe)
        if cached is not None:
            self.log(f"model {spec.name}: found in the cache ({path})")
            return Provenance(spec.name, "cache", path, cached)
        self.log(f"model {spec.name}: training ({recipe.command})")
        trained = train(recipe)
        assert trained is not None  # a single process is always rank 0
        return Provenance(spec.name, "trained now", path, trained)

    def recipe(self, spec: ModelSpec, out: Path) -> TrainConfig:
        """The architecture's recipe at this scale (reference: 10 epochs, batch 128, Adam 1e-3, seed 0)."""
        recipe = self.cfg.scale.recipes[spec.arch]
        cfg = TrainConfig(
            dataset=spec.dataset, data_root=str(self.cfg.data_root), arch=spec.arch, arch_args=dict(recipe.arch_args),
            noise=spec.noise, level=spec.level, epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
            schedule=recipe.schedule, seed=0, out=str(out), device=self.cfg.device, limit=self.cfg.scale.train_limit,
        )  # fmt: skip
        cfg.command = train_command(cfg)
        return cfg

    @staticmethod
    def _cached_card(path: Path, recipe: TrainConfig) -> ModelCard | None:
        """The cached model's card if it was trained with exactly this recipe, else None (retrain).

        The architecture's arguments are compared as the card's ``hyperparameters`` (what the model was
        built with, defaults included) against those the recipe builds, so a changed default retrains too.
        """
        try:
            _, card = load_checkpoint(path, "cpu")
        except CheckpointError:
            return None
        config = card.training.get("config", {})
        keys = ("dataset", "arch", "noise", "epochs", "batch_size", "lr", "schedule", "seed", "limit")
        same = all(config.get(k) == getattr(recipe, k) for k in keys) and config.get("level") == recipe.noise_level
        return card if same and card.hyperparameters == recipe_hyperparameters(recipe) else None


def recipe_hyperparameters(cfg: TrainConfig) -> dict[str, Any]:
    """The hyper-parameters a card records for this config, as JSON reads them back (tuples become lists)."""
    model = create_model(cfg.arch, **cfg.arch_args)
    return dict(json.loads(json.dumps(getattr(model, "hyperparameters", {}))))


def train_command(cfg: TrainConfig) -> str:
    """The ``dae-train`` command line equivalent to a config, as recorded in the model card."""
    args = [
        "dae-train", "--dataset", cfg.dataset, "--data-root", cfg.data_root, "--arch", cfg.arch,
        *(token for key, value in cfg.arch_args.items() for token in ("--arch-arg", f"{key}={json.dumps(value)}")),
        "--noise", cfg.noise, "--level", f"{cfg.noise_level:g}", "--epochs", str(cfg.epochs),
        "--batch-size", str(cfg.batch_size), "--lr", f"{cfg.lr:g}", "--schedule", cfg.schedule,
    ]  # fmt: skip
    if cfg.limit:
        args += ["--limit", str(cfg.limit)]
    return shlex.join([*args, "--seed", str(cfg.seed), "--device", cfg.device, "--out", cfg.out])
