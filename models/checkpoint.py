"""The checkpoint format: a safetensors weights file and a JSON model card beside it.

``checkpoints/mlp-gaussian.safetensors`` holds only tensors (nothing is ever unpickled) and
``checkpoints/mlp-gaussian.json`` says what they are: architecture and hyper-parameters, input size,
data set, training noise, how it was trained, its test figures, library versions and the sha256 of the
weights file. ``load_checkpoint`` checks the card against the weights and raises ``CheckpointError``
naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import safetensors
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file
from torch import nn

from models.architectures import MODEL_REGISTRY, create_model

CARD_FORMAT_VERSION = 1
# The MNIST-style sets (28×28 digits and clothes, from IDX files); any other card ``dataset`` is photos.
DIGIT_DATASETS = ("mnist", "fashion-mnist")


def is_photo_dataset(dataset: str) -> bool:
    """Whether ``dataset`` (``--dataset``, or a card's) names photos (a named photo set or a folder) rather
    than an MNIST-style IDX set."""
    return dataset not in DIGIT_DATASETS


class CheckpointError(Exception):
    """A checkpoint that cannot be trusted or loaded; the message names the file and the problem."""


class ModelCard(BaseModel):
    """What a weights file is and how it was made."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    format_version: int = CARD_FORMAT_VERSION
    name: str
    architecture: str
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    parameters: int
    input_size: list[int] | None = Field(description="[height, width], or null for any size")
    dataset: str
    noise: str
    noise_level: float
    epochs: int
    best_epoch: int | None = None
    seed: int
    training: dict[str, Any] = Field(default_factory=dict)
    test_metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    library_versions: dict[str, str] = Field(default_factory=dict)
    weights_file: str
    weights_sha256: str

    @property
    def learnt_from_photos(self) -> bool:
        """Whether the model was trained on photos rather than 28×28 digits."""
        return is_photo_dataset(self.dataset)


def library_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "safetensors": safetensors.__version__}


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, card) for a path given as the stem, the .safetensors file or the .json card."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in {".safetensors", ".json"} else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_input_size(model: nn.Module) -> list[int] | None:
    """[height, width] a fixed-size model takes, or None for a model of any size."""
    size = getattr(model, "input_size", None)
    return [int(d) for d in size] if isinstance(size, tuple) else None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(model: nn.Module, path: str | Path, **card_fields: Any) -> ModelCard:
    """Write the weights (float32, CPU) and the card; returns the card written."""
    weights_path, card_path = checkpoint_paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights_path))
    fields: dict[str, Any] = {
        "name": weights_path.stem,
        "hyperparameters": getattr(model, "hyperparameters", {}),
        "parameters": count_parameters(model),
        "input_size": model_input_size(model),
        "library_versions": library_versions(),
        **card_fields,
        "weights_file": weights_path.name,
        "weights_sha256": sha256_file(weights_path),
    }
    card = ModelCard(**fields)
    write_card(card, card_path)
    return card


def write_card(card: ModelCard, card_path: Path) -> None:
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card.model_dump(), indent=2) + "\n")
    tmp.replace(card_path)


def read_card(card_path: Path) -> ModelCard:
    if not card_path.is_file():
        raise CheckpointError(f"{card_path}: model card not found")
    try:
        return ModelCard.model_validate_json(card_path.read_bytes())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'card'}: {e['msg']}" for e in exc.errors())
        raise CheckpointError(f"{card_path}: invalid model card ({problems})") from None


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, ModelCard]:
    """Load and verify a checkpoint; returns the model in eval mode on ``device`` and its card."""
    _, card_path = checkpoint_paths(path)
    card = read_card(card_path)
    # The card names its weights file; a bare file name keeps it inside the checkpoint's folder.
    if Path(card.weights_file).name != card.weights_file:
        raise CheckpointError(f"{card_path}: weights_file must be a file name, got {card.weights_file!r}")
    weights_path = card_path.with_name(card.weights_file)
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: weights file not found (named by {card_path.name})")
    data = weights_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != card.weights_sha256:
        raise CheckpointError(
            f"{weights_path}: sha256 {digest[:12]}… does not match the card's {card.weights_sha256[:12]}…"
            " (the file was changed or truncated)"
        )
    try:
        state = load_safetensors(data)
    except Exception as exc:  # safetensors raises its own error types for a corrupt header or body
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({exc})") from None
    if card.architecture not in MODEL_REGISTRY:
        raise CheckpointError(
            f"{card_path}: unknown architecture {card.architecture!r}; known: {', '.join(sorted(MODEL_REGISTRY))}"
        )
    try:
        model = create_model(card.architecture, **card.hyperparameters)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{card_path}: hyperparameters do not build {card.architecture!r} ({exc})") from None
    _check_state_matches(model, state, weights_path)
    model.load_state_dict(state)
    model_size = model_input_size(model)
    if card.input_size != model_size:
        raise CheckpointError(f"{card_path}: input_size {card.input_size} but the model takes {model_size}")
    return model.to(device).eval(), card


def _check_state_matches(model: nn.Module, state: dict[str, torch.Tensor], weights_path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:3]}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:3]}")
    if wrong:
        problems.append(f"shape mismatch {wrong[:3]}")
    if problems:
        raise CheckpointError(f"{weights_path}: weights do not fit the card's architecture: {'; '.join(problems)}")


def find_checkpoints(directory: str | Path) -> list[Path]:
    """Every model card (``*.json``) in ``directory``, sorted by name."""
    return sorted(Path(directory).glob("*.json"))
