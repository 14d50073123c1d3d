"""Photo data sets: a folder of image files, each read as one 8-bit grayscale H×W tensor.

``--dataset train400`` is looked up under ``--data-root`` (``natural/train400``, then ``train400``);
any other name that is not an MNIST-style set is taken as the path of a folder of images. The images
may differ in size, so a photo set is a list of uint8 tensors, not one N×H×W tensor.
"""

from __future__ import annotations

from pathlib import Path

import torch

from training.data import DATASETS, DataError

PHOTO_DATASETS = ("train400",)  # named photo sets found under --data-root
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".pgm", ".ppm"})
# A small folder keeps most of itself for training: at most this fraction is held out, whatever --val-images.
PHOTO_VAL_FRACTION = 1 / 3


def photo_folder(dataset: str, data_root: str | Path, named: tuple[str, ...] = PHOTO_DATASETS) -> Path:
    """The folder ``--dataset`` names (one of ``named``, under ``data_root``, or a path); ``DataError`` naming
    where it looked when there is none."""
    if dataset in named:
        candidates = [Path(data_root) / "natural" / dataset, Path(data_root) / dataset]
    else:
        candidates = [Path(dataset)]
    for folder in candidates:
        if folder.is_dir():
            return folder
    looked = " or ".join(str(f) for f in candidates)
    known = ", ".join((*DATASETS, *named))
    raise DataError(f"data set {dataset!r}: no folder {looked} (give one of {known} or a folder of images)")


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, by name (so the order, and the held-out slice, are fixed)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_gray(path: Path) -> torch.Tensor:
    """One image file → H×W uint8 (Pillow's "L": colour is converted with the ITU-R 601 luma weights)."""
    from PIL import Image, UnidentifiedImageError  # imported here: the MNIST commands never pay for it

    try:
        with Image.open(path) as image:
            gray = image.convert("L")
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from exc
    return torch.frombuffer(bytearray(gray.tobytes()), dtype=torch.uint8).view(gray.height, gray.width)


def load_photos(dataset: str, data_root: str | Path) -> list[torch.Tensor]:
    """Every image of the photo set ``dataset``, as H×W uint8 tensors in file-name order."""
    folder = photo_folder(dataset, data_root)
    files = image_files(folder)
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise DataError(f"data set {dataset!r}: {folder} holds no image files ({suffixes})")
    return [read_gray(path) for path in files]
