"""Every model the study uses: the shipped checkpoints, and those it trains into its cache.

Each model is trained with several seeds (``StudyConfig.seeds``): seed 0 of a shipped model is the shipped
checkpoint, used as it is; every other (model, seed) is trained, once, into the cache under the model's name
with ``@s<seed>`` (``mlp-gaussian-0.1@s1``), so a second run finds it there and only evaluates. A shipped
model's further seeds use the study's recipe, which is checked against the shipped card first, so its seeds
differ only in the seed. ``--quick`` trains every model, tiny, from the test fixture, so it never depends on
what is in ``checkpoints/``.
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
from training.config import TrainConfig
from training.study.config import StudyConfig
from training.study.level_aware import train_level_aware
from training.study.log import LogFn, ProgressLog
from training.train import train

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
    # The blindness matrix: a U-Net specialist per noise (conv-blind's architecture and recipe) and the U-Net
    # told the noise level, so blindness is measured apart from the architecture.
    ModelSpec("conv-gaussian", "mnist", "conv", "gaussian", 0.3, shipped=False),
    ModelSpec("conv-salt-pepper", "mnist", "conv", "salt_pepper", 0.2, shipped=False),
    ModelSpec("conv-masking", "mnist", "conv", "masking", 0.3, shipped=False),
    ModelSpec("conv-level", "mnist", "conv-level", "mixed", 0.5, shipped=False),
)
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}
SEED_MARK = "@s"


def seeded(name: str, seed: int) -> str:
    """The name of one training seed of a model: seed 0 keeps the plain name (the shipped one, if shipped)."""
    return name if seed == 0 else f"{name}{SEED_MARK}{seed}"


def base_name(name: str) -> str:
    return name.split(SEED_MARK)[0]


def seed_of(name: str) -> int:
    """The training seed in a seed's name (``mlp-mixed@s2`` → 2; the plain name is seed 0)."""
    return int(name.split(SEED_MARK)[1]) if SEED_MARK in name else 0


def max_trained_level(noise: str, dataset: str = "mnist") -> float:
    """The highest level of ``noise`` any model of the study trains on (``mixed`` covers every type up to its
    level): a test level above it is unseen by every model."""
    levels = [s.level for s in SPECS if s.dataset == dataset and (s.noise == noise or s.noise == "mixed")]
    return max(levels, default=0.0)


@dataclass
class Provenance:
    """Where one seed of a model came from, for the report's model table."""

    name: str
    source: str  # "shipped", "cache" or "trained now"
    path: Path
    card: ModelCard
    seed: int = 0


class ModelZoo:
    """Finds, trains (where needed) and loads the study's models, each loaded once."""

    def __init__(self, cfg: StudyConfig, log: LogFn) -> None:
        self.cfg = cfg
        self.log = log
        self.device = resolve_device(cfg.device)
        self.provenance: dict[str, Provenance] = {}
        self._loaded: dict[str, nn.Module] = {}
        self._on_demand = False

    def prepare(self, only: tuple[str, ...] = ()) -> None:
        """Resolve every model and seed up front (or those of the models named in ``only``), so a missing
        checkpoint fails before hours of work."""
        unknown = [name for name in only if name not in SPEC_BY_NAME]
        if unknown:
            raise CheckpointError(
                f"unknown study model(s): {', '.join(unknown)}; the study's are {', '.join(SPEC_BY_NAME)}"
            )
        if not self.cfg.quick:
            self._check_shipped()
        for spec in SPECS:
            if not only or spec.name in only:
                self._resolve_seeds(spec)

    def prepare_on_demand(self) -> None:
        """Resolve (and train, if missing) each model when it is first asked for rather than up front: a re-run of
        a few sections (``dae-report --only``) then trains only the models those sections use."""
        if not self.cfg.quick:
            self._check_shipped()
        self._on_demand = True

    def names(self, name: str) -> list[str]:
        """Every training seed of a model, by name, seed 0 first (only seed 0 of an adopted model)."""
        self._resolve_on_demand(name)
        return [n for n in (seeded(base_name(name), seed) for seed in self.cfg.seeds) if n in self.provenance]

    def adopt_shipped(self, name: str) -> bool:
        """Take a shipped model the study does not train (one seed, as shipped) if ``checkpoint_dir`` has it."""
        path = self.cfg.checkpoint_dir / name
        if not checkpoint_paths(path)[1].is_file():
            return False
        _, card = load_checkpoint(path, "cpu")  # verifies weights against the card
        self.provenance[name] = Provenance(name, "shipped", path, card)
        return True

    def model(self, name: str) -> nn.Module:
        if name not in self._loaded:
            self._resolve_on_demand(name)
            self._loaded[name], _ = load_checkpoint(self.provenance[name].path, self.device)
        return self._loaded[name]

    def card(self, name: str) -> ModelCard:
        self._resolve_on_demand(name)
        return self.provenance[name].card

    def _resolve_on_demand(self, name: str) -> None:
        """After ``prepare_on_demand``: the seeds of ``name``'s study model (``name`` may be any one of them)."""
        spec = SPEC_BY_NAME.get(base_name(name))
        if self._on_demand and spec is not None:  # an adopted model (adopt_shipped) is resolved already
            self._resolve_seeds(spec)

    def _resolve_seeds(self, spec: ModelSpec) -> None:
        """Every training seed of ``spec`` not resolved yet: found in the cache, or trained now."""
        for seed in self.cfg.seeds:
            if seeded(spec.name, seed) not in self.provenance:
                self.provenance[seeded(spec.name, seed)] = self._resolve(spec, seed)

    def _check_shipped(self) -> None:
        shipped = [s.name for s in SPECS if s.shipped]
        missing = [n for n in shipped if not checkpoint_paths(self.cfg.checkpoint_dir / n)[1].is_file()]
        if missing:
            raise CheckpointError(
                f"{self.cfg.checkpoint_dir}: shipped checkpoints missing: {', '.join(missing)}; train them with "
                f"`DATA_ROOT={self.cfg.data_root} bash checkpoints/train_all.sh {' '.join(missing)}`"
            )

    def _resolve(self, spec: ModelSpec, seed: int) -> Provenance:
        name = seeded(spec.name, seed)
        if spec.shipped and not self.cfg.quick:
            shipped = self._shipped(spec)
            if seed == 0:
                return shipped
            check_same_recipe(shipped, self.recipe(spec, shipped.path, seed))
        path = self.cfg.model_cache / name
        recipe = self.recipe(spec, path, seed)
        cached = self.cached_card(path, recipe)
        if cached is not None:
            self.log(f"model {name}: found in the cache ({path})")
            return Provenance(name, "cache", path, cached, seed)
        self.log(f"model {name}: training ({recipe.command})")
        trained = train_level_aware(recipe) if spec.arch == "conv-level" else train(recipe)
        assert trained is not None  # a single process is always rank 0
        return Provenance(name, "trained now", path, trained, seed)

    def _shipped(self, spec: ModelSpec) -> Provenance:
        path = self.cfg.checkpoint_dir / spec.name
        _, card = load_checkpoint(path, "cpu")  # verifies weights against the card
        if not spec.matches(card):
            raise CheckpointError(f"{path}: card says {card.dataset}/{card.architecture}/{card.noise} "
                                  f"{card.noise_level}, the study expects {spec}")  # fmt: skip
        return Provenance(spec.name, "shipped", path, card)

    def recipe(self, spec: ModelSpec, out: Path, seed: int = 0) -> TrainConfig:
        """The architecture's recipe at this scale (reference: 10 epochs, batch 128, Adam 1e-3)."""
        recipe = self.cfg.scale.recipes[spec.arch]
        cfg = TrainConfig(
            dataset=spec.dataset, data_root=str(self.cfg.data_root), arch=spec.arch, arch_args=dict(recipe.arch_args),
            noise=spec.noise, level=spec.level, epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
            schedule=recipe.schedule, seed=seed, out=str(out), device=self.cfg.device,
            limit=self.cfg.scale.train_limit,
        )  # fmt: skip
        cfg.command = train_command(cfg)
        return cfg

    @staticmethod
    def cached_card(path: Path, recipe: TrainConfig) -> ModelCard | None:
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


def check_same_recipe(shipped: Provenance, recipe: TrainConfig) -> None:
    """Refuse to add seeds to a shipped model with any recipe but its own: they would not be its seeds."""
    config, card = shipped.card.training.get("config", {}), shipped.card
    recorded = {k: config.get(k, default) for k, default in
                (("epochs", None), ("batch_size", None), ("lr", None), ("schedule", "constant"))}  # fmt: skip
    wanted = {k: getattr(recipe, k) for k in recorded}
    if recorded != wanted or card.hyperparameters != recipe_hyperparameters(recipe):
        raise CheckpointError(
            f"{shipped.path}: shipped with {recorded} {card.hyperparameters}, but the study would train its other "
            f"seeds with {wanted} {recipe_hyperparameters(recipe)}; make training.study.config's recipe match"
        )


def recipe_hyperparameters(cfg: TrainConfig) -> dict[str, Any]:
    """The hyper-parameters a card records for this config, as JSON reads them back (tuples become lists)."""
    model = create_model(cfg.arch, **cfg.arch_args)
    return dict(json.loads(json.dumps(getattr(model, "hyperparameters", {}))))


def train_command(cfg: TrainConfig) -> str:
    """The ``dae-train`` command line equivalent to a config, as recorded in the model card."""
    # conv-level needs the study's own loop (it is told each image's level): the same options, another program.
    program = ["python", "-m", "training.study.level_aware"] if cfg.arch == "conv-level" else ["dae-train"]
    args = [
        *program, "--dataset", cfg.dataset, "--data-root", cfg.data_root, "--arch", cfg.arch,
        *(token for key, value in cfg.arch_args.items() for token in ("--arch-arg", f"{key}={json.dumps(value)}")),
        "--noise", cfg.noise, "--level", f"{cfg.noise_level:g}", "--epochs", str(cfg.epochs),
        "--batch-size", str(cfg.batch_size), "--lr", f"{cfg.lr:g}", "--schedule", cfg.schedule,
    ]  # fmt: skip
    if cfg.limit:
        args += ["--limit", str(cfg.limit)]
    return shlex.join([*args, "--seed", str(cfg.seed), "--device", cfg.device, "--out", cfg.out])


def train_into_cache(cfg: StudyConfig, log: LogFn | None = None) -> dict[str, Provenance]:
    """``dae-report --train-only``: every seed of the named models, found in the cache or trained into it.

    It needs torch alone, not the ``study`` extra, so a machine with PyTorch and nothing else (a lent GPU) can
    train the study's U-Nets for a later report.
    """
    log = log or ProgressLog()
    zoo = ModelZoo(cfg, log)
    zoo.prepare(cfg.train_only)
    log(f"trained or found {len(zoo.provenance)} model seed(s) in {cfg.model_cache}; no report (--train-only)")
    return zoo.provenance
