"""The checkpoint format: a round trip, and every way a checkpoint can lie refused with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.architectures import create_model
from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, sha256_file

CARD = {"architecture": "conv", "dataset": "mnist", "noise": "gaussian", "noise_level": 0.3, "epochs": 1, "seed": 0}


@pytest.fixture
def saved(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = create_model("conv", channels=8).eval()
    save_checkpoint(model, tmp_path / "tiny", **CARD)
    return model, tmp_path


def edit_card(card_path: Path, **changes: object) -> None:
    card = json.loads(card_path.read_text())
    card.update(changes)
    card_path.write_text(json.dumps(card))


@pytest.mark.parametrize("arch,hyper", [("mlp", {}), ("conv", {"channels": 8})])
def test_round_trip_gives_the_same_model_and_card(tmp_path: Path, arch: str, hyper: dict) -> None:
    model = create_model(arch, **hyper).eval()
    card = save_checkpoint(model, tmp_path / "m", **{**CARD, "architecture": arch})
    loaded, loaded_card = load_checkpoint(tmp_path / "m.json")
    x = torch.rand(2, 1, 28, 28)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    assert loaded_card == card
    assert card.weights_sha256 == sha256_file(tmp_path / "m.safetensors")
    assert card.parameters == sum(p.numel() for p in model.parameters())
    assert card.input_size == ([28, 28] if arch == "mlp" else None)
    assert set(card.library_versions) >= {"torch", "safetensors", "python"}
    # the stem and the weights path load the same checkpoint
    assert load_checkpoint(tmp_path / "m")[1] == load_checkpoint(tmp_path / "m.safetensors")[1]


def test_weights_file_holds_no_pickle(saved: tuple[torch.nn.Module, Path]) -> None:
    data = (saved[1] / "tiny.safetensors").read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    assert json.loads(data[8 : 8 + header_len])  # a safetensors header is JSON, not a pickle


def test_tampered_weights_refused_naming_the_file(saved: tuple[torch.nn.Module, Path]) -> None:
    weights = saved[1] / "tiny.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"tiny\.safetensors.*sha256.*does not match"):
        load_checkpoint(saved[1] / "tiny")


def test_truncated_weights_refused_even_when_the_card_agrees(saved: tuple[torch.nn.Module, Path]) -> None:
    weights = saved[1] / "tiny.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    edit_card(saved[1] / "tiny.json", weights_sha256=sha256_file(weights))
    with pytest.raises(CheckpointError, match=r"tiny\.safetensors: not a readable safetensors file"):
        load_checkpoint(saved[1] / "tiny")


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"hyperparameters": {"channels": 16, "depth": 2}}, r"tiny\.safetensors: weights do not fit.*shape mismatch"),
        ({"hyperparameters": {"channels": 8, "depth": 3}}, r"weights do not fit.*missing tensors"),
        ({"architecture": "mlp", "hyperparameters": {}}, r"weights do not fit"),
        ({"architecture": "resnet"}, r"tiny\.json: unknown architecture 'resnet'"),
        ({"hyperparameters": {"width": 3}}, r"tiny\.json: hyperparameters do not build"),
        ({"weights_file": "../elsewhere.safetensors"}, r"weights_file must be a file name"),
        ({"input_size": [28, 28]}, r"input_size \[28, 28\] but the model takes None"),
        ({"noise_level": "loud"}, r"tiny\.json: invalid model card \(noise_level"),
    ],
)
def test_card_that_does_not_match_the_weights_is_refused(
    saved: tuple[torch.nn.Module, Path], changes: dict, message: str
) -> None:
    edit_card(saved[1] / "tiny.json", **changes)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(saved[1] / "tiny")


def test_missing_card_or_weights_named(saved: tuple[torch.nn.Module, Path]) -> None:
    with pytest.raises(CheckpointError, match=r"nothing\.json: model card not found"):
        load_checkpoint(saved[1] / "nothing")
    (saved[1] / "tiny.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"tiny\.safetensors: weights file not found"):
        load_checkpoint(saved[1] / "tiny")
