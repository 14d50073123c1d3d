"""Shared test paths and helpers: the committed fixture of real images and the shipped checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURE_ROOT = REPO / "tests" / "fixtures"
CHECKPOINT_DIR = REPO / "checkpoints"
SHIPPED_MODELS = (
    "mlp-gaussian",
    "mlp-salt-pepper",
    "mlp-masking",
    "mlp-standard",
    "conv-blind",
    "conv-blind-fashion",
    "photo-blind",
)
PHOTO_MODELS = ("photo-blind",)  # trained on photos, evaluated on Set12 and BSD68 rather than a test split


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run pytest -m cuda on a GPU machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fixture_root() -> Path:
    return FIXTURE_ROOT


@pytest.fixture(scope="session")
def mnist_test_images() -> torch.Tensor:
    from training.data import load_split

    images, _ = load_split("mnist", "test", FIXTURE_ROOT, download=False)
    return images
