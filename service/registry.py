"""The loaded models: verify every checkpoint in the folder, warm each up, and find them by name.

Plain Python (no HTTP): the app's lifespan calls ``load_models`` at start-up and ``ModelStore.warm_up``
in the inference thread; the routes call ``ModelStore.get``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.checkpoint import CheckpointError, ModelCard, find_checkpoints, load_checkpoint
from models.device import resolve_inference_dtype
from service.batcher import DynamicBatcher
from service.errors import Unavailable, UnknownModel
from service.inference import InferenceRunner, Runner

log = logging.getLogger(__name__)

# Fully convolutional models take any size; they are warmed up, and usually asked, at MNIST's.
NOMINAL_SIZE = (28, 28)


class StartupError(Exception):
    """The service cannot start: no usable checkpoint, or one failed verification."""


@dataclass
class LoadedModel:
    name: str
    model: nn.Module
    card: ModelCard
    runner: Runner  # an InferenceRunner, or a ProcessRunner once the inference process has the model
    batcher: DynamicBatcher | None = None

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(height, width) the model needs, or None when it takes any size."""
        size = self.card.input_size
        return (size[0], size[1]) if size else None


def prepare_for_serving(model: nn.Module, device: torch.device) -> nn.Module:
    """Channels-last weights on CPU: oneDNN's convolutions run about a fifth faster with them, and a
    model without 4-D weights is unchanged."""
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model.eval().requires_grad_(False)


def load_models(directory: Path, device: torch.device, skip_bad: bool = False) -> list[tuple[nn.Module, ModelCard]]:
    """Load and verify every checkpoint in ``directory`` (sorted by name).

    A checkpoint failing verification raises ``StartupError`` naming the file, or with ``skip_bad`` is
    logged and left out; no usable checkpoint at all is always an error.
    """
    if not directory.is_dir():
        raise StartupError(f"checkpoint folder {directory} does not exist (set --checkpoint-dir or DAE_CHECKPOINT_DIR)")
    loaded = []
    for card_path in find_checkpoints(directory):
        try:
            model, card = load_checkpoint(card_path, device)
        except CheckpointError as exc:
            if not skip_bad:
                raise StartupError(f"refusing to start: {exc} (DAE_SKIP_BAD_CHECKPOINTS=true skips it)") from exc
            log.warning("skipping checkpoint %s: %s", card_path, exc)
            continue
        loaded.append((prepare_for_serving(model, device), card))
        log.info("loaded %s (%s, %d parameters) on %s", card.name, card.architecture, card.parameters, device)
    if not loaded:
        raise StartupError(f"no usable checkpoint (*.json model card with its weights) in {directory}")
    names = [card.name for _, card in loaded]
    if len(set(names)) != len(names):
        raise StartupError(f"two model cards in {directory} share a name: {sorted(names)}")
    return loaded


@dataclass
class ModelStore:
    """Every loaded model by name, the default, and whether the service is ready (warmed up)."""

    models: dict[str, LoadedModel]
    default_name: str
    ready: bool = False
    not_ready_reason: str = "models are warming up"
    warm_up_sizes: list[int] = field(default_factory=lambda: [1])

    @classmethod
    def from_loaded(
        cls,
        loaded: list[tuple[nn.Module, ModelCard]],
        device: torch.device,
        default_model: str,
        max_batch_size: int,
        inference_dtype: str,
    ) -> ModelStore:
        models = {
            card.name: LoadedModel(
                card.name,
                model,
                card,
                InferenceRunner(card.name, model, device, resolve_inference_dtype(inference_dtype, device, model)),
            )
            for model, card in loaded
        }
        default_name = default_model
        if default_name not in models:
            default_name = next(iter(models))
            log.warning("default model %r is not loaded; using %r (set DAE_DEFAULT_MODEL)", default_model, default_name)
        # Powers of two up to the largest batch: oneDNN builds its kernels per shape on first use.
        sizes = sorted(
            {1, max_batch_size} | {2**k for k in range(max_batch_size.bit_length()) if 2**k < max_batch_size}
        )
        return cls(models, default_name, warm_up_sizes=sizes)

    def get(self, name: str | None) -> LoadedModel:
        """The model called ``name`` (the default for None); ``UnknownModel`` (404) names the choices."""
        if not self.ready:
            raise Unavailable(f"the service is not ready: {self.not_ready_reason}")
        entry = self.models.get(name or self.default_name)
        if entry is None:
            raise UnknownModel(f"no model named {name!r}; loaded: {', '.join(self.models)}")
        return entry

    def warm_up(self) -> None:
        """A real forward pass per model and batch size, in the inference thread; raises if one fails."""
        for entry in self.models.values():
            height, width = entry.input_size or NOMINAL_SIZE
            for size in self.warm_up_sizes:
                inputs = [np.full((height, width), 0.5, dtype=np.float32)] * size
                outcome = entry.runner.run(inputs)[0]
                if isinstance(outcome, Exception):
                    raise RuntimeError(f"warm-up of model {entry.name!r} failed: {outcome.detail}")
            log.info("warmed up %s (batch sizes %s)", entry.name, self.warm_up_sizes)
