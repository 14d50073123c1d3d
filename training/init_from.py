"""``dae-train --init-from``: a run that starts from a checkpoint's weights, the same model or one grown by blocks."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.checkpoint import load_checkpoint


def initialise_from(model: nn.Module, path: str) -> dict[str, Any]:
    """Load a checkpoint's weights into ``model``; returns what the new card records of where they came from.

    The earlier run's command and time go into the new card, so a fine-tuned checkpoint's whole cost and recipe
    stay on record even when the first stage's checkpoint is not shipped.
    """
    source, card = load_checkpoint(path)
    mismatch = ValueError(
        f"--init-from {path}: it holds a {card.architecture} {card.hyperparameters}, not the model --arch/--arch-arg "
        "describe; give the same architecture and arguments (more `blocks` may be added: they start as the identity)"
    )
    try:
        missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
    except RuntimeError as exc:  # differently shaped tensors
        raise mismatch from exc
    if unexpected or (missing and not computes_the_same(model, source.eval())):
        raise mismatch
    training = card.training
    return {
        "checkpoint": card.name,
        "weights_sha256": card.weights_sha256,
        "command": training.get("command"),
        "wall_time_s": training.get("wall_time_s"),
        "epochs": card.epochs,
        **({"new_tensors": len(missing)} if missing else {}),
        # The earlier stages of a run fine-tuned more than once, nested: the whole chain stays on record.
        **({"init_from": training["init_from"]} if training.get("init_from") else {}),
    }


def computes_the_same(grown: nn.Module, source: nn.Module) -> bool:
    """Whether a model with more parameters than ``source`` still computes what it does (its new layers start as
    the identity), on one random image: growing a trained model must not throw its training away."""
    device = next(grown.parameters()).device
    size = getattr(source, "input_size", None) or (48, 48)
    probe = torch.rand(1, getattr(source, "input_channels", 1), *size, generator=torch.Generator().manual_seed(0))
    was_training = grown.training
    with torch.no_grad():  # a tolerance: the two may run different kernels (channels-last, TF32 on a GPU)
        same = torch.allclose(grown.eval()(probe.to(device)), source.to(device)(probe.to(device)), atol=1e-4)
    grown.train(was_training)
    return same
