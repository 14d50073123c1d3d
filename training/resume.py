"""``dae-train --resume``: the state a run saves after every epoch, so that a stopped run picks up where it was.

Model and optimizer tensors in safetensors, the rest as JSON; nothing pickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


@dataclass
class Progress:
    """Where a run stands after an epoch: what ``--resume`` restores, so a resumed run's card is the whole run's."""

    epoch: int = 0
    best: dict[str, float] = field(default_factory=lambda: {"psnr": -1.0, "epoch": -1})
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    history: list[dict[str, float | None]] = field(default_factory=list)
    elapsed_s: float = 0.0


def save_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, progress: Progress) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in progress.best_state.items()})
    opt = optimizer.state_dict()
    for param_id, slots in opt["state"].items():
        for slot, value in slots.items():
            tensors[f"optim.{param_id}.{slot}"] = torch.as_tensor(value).detach().cpu().contiguous()
    save_file(tensors, str(path.with_suffix(".resume.safetensors")))
    meta = {
        "epoch": progress.epoch,
        "best": progress.best,
        "history": progress.history,
        "elapsed_s": progress.elapsed_s,
        "param_groups": opt["param_groups"],
    }
    path.with_suffix(".resume.meta").write_text(json.dumps(meta))


def load_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> Progress:
    tensors_path, meta_path = path.with_suffix(".resume.safetensors"), path.with_suffix(".resume.meta")
    if not tensors_path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"--resume: no training state at {tensors_path} (is the run already finished?)")
    tensors = load_file(str(tensors_path))
    meta = json.loads(meta_path.read_text())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, param_id, slot = key.split(".", 2)
            state.setdefault(int(param_id), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    device = next(model.parameters()).device
    best_state = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
    return Progress(int(meta["epoch"]), meta["best"], best_state, meta.get("history", []), meta.get("elapsed_s", 0.0))
