"""MNIST-style data sets from their IDX files, as whole-split uint8 tensors.

``--data-root`` may hold the four files gzipped or not, flat, in a ``mnist/`` or ``fashion-mnist/``
sub-folder, or in torchvision's ``MNIST/raw`` layout. Where they are missing, torchvision's download is
tried (a machine with internet); failing that, one error names every missing file and where it looked.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import DIGIT_DATASETS

DATASETS = DIGIT_DATASETS
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_IDX_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(Exception):
    """The data set cannot be found or read; the message says what is missing and where it looked."""


def candidate_folders(data_root: Path, dataset: str) -> list[Path]:
    return [data_root, data_root / dataset, data_root / _TORCHVISION_FOLDERS[dataset] / "raw"]


def find_idx_file(data_root: Path, dataset: str, name: str) -> Path | None:
    for folder in candidate_folders(data_root, dataset):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (gzipped or not) into a numpy array of its declared shape."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    body = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: header says {shape} but holds {body.size} values (truncated?)")
    return body.reshape(shape)


def _try_torchvision_download(data_root: Path, dataset: str) -> None:
    try:
        import torchvision.datasets as tv

        cls = tv.MNIST if dataset == "mnist" else tv.FashionMNIST
        for train in (True, False):
            cls(str(data_root), train=train, download=True)
    except Exception:  # no network, or no torchvision: the caller reports what is missing
        pass


def load_split(
    dataset: str, split: str, data_root: str | Path, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images N×H×W uint8, labels N int64) of one split."""
    if dataset not in DATASETS:
        raise DataError(f"unknown data set {dataset!r}; choose one of {', '.join(DATASETS)}")
    data_root = Path(data_root)
    names = SPLIT_FILES[split]
    paths = [find_idx_file(data_root, dataset, n) for n in names]
    if None in paths and download:
        _try_torchvision_download(data_root, dataset)
        paths = [find_idx_file(data_root, dataset, n) for n in names]
    missing = [n for n, p in zip(names, paths, strict=True) if p is None]
    if missing:
        looked = ", ".join(str(f) for f in candidate_folders(data_root, dataset))
        raise DataError(
            f"{dataset} {split} split: missing {', '.join(missing)} (plain or .gz); looked in {looked}"
            + (" and the download failed (no network?)" if download else "")
        )
    images = read_idx(paths[0])  # type: ignore[arg-type]
    labels = read_idx(paths[1])  # type: ignore[arg-type]
    if images.ndim != 3 or len(images) != len(labels):
        raise DataError(f"{paths[0]}: expected N×H×W images matching {len(labels)} labels, got {images.shape}")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def holdout_split(n: int, val_fraction: float = 1 / 12, max_val: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, validation) of a fixed held-out slice of the train split.

    The slice is the same for every model and seed (a fixed permutation), so validation figures are
    comparable across runs; the test split is never used for training or model selection.
    """
    n_val = min(max_val, max(1, int(n * val_fraction)))  # max_val 0: no validation, train on all
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(20261124))
    return perm[n_val:].sort().values, perm[:n_val].sort().values
