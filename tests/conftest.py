"""Shared test paths and helpers: the committed fixture of real images and the shipped checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


@pytest.fixture(autouse=True)
def _cpu_unless_marked_cuda(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine with CUDA, a test not marked ``cuda`` runs as it would on a CPU-only machine.

    Their figures are a CPU's: ``auto`` picks float32 training, bf16 serving on AMX, the inference child
    process, all of which ``auto`` decides differently on a GPU. So ``auto`` means the CPU there: in this
    process (dae-train, load_checkpoint), in the app (``DAE_DEVICE``) and in the servers and trainings a test
    starts as processes. The ``cuda`` tests name the GPU themselves, and compare it with the CPU.
    """
    if "cuda" in request.keywords or not torch.cuda.is_available():
        return
    monkeypatch.setenv("DAE_DEVICE", "cpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@contextmanager
def exact_float32() -> Iterator[None]:
    """cuDNN's convolutions in true float32: by default they round their inputs to TF32 (a 10-bit mantissa,
    relative error up to 5e-4 per operand), more than the 1e-4 a CPU/GPU comparison of a checkpoint's float32
    numerics should allow. The service keeps TF32 on; its own comparison allows for it."""
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


@pytest.fixture(scope="session")
def fixture_root() -> Path:
    return FIXTURE_ROOT


@pytest.fixture(scope="session")
def mnist_test_images() -> torch.Tensor:
    from training.data import load_split

    images, _ = load_split("mnist", "test", FIXTURE_ROOT, download=False)
    return images
