"""``dae-eval`` on photos, in the Gaussian-denoising papers' protocol (TNRD, DnCNN, FFDNet, DRUNet).

Test sets: ``set12`` and ``bsd68``, found under ``--data-root`` (``natural/<name>``, then ``<name>``), or
any folder of images given as ``--dataset``. Each image is read as 8-bit grayscale and denoised whole and
on its own, whatever its size (a convolutional model pads it as it needs).

The protocol, for Gaussian noise: the clean image is x = uint8 / 255; the noisy input is x + (σ/255)·n, n
standard normal, in floating point and NOT clipped to [0, 1] (its values leave [0, 1], and its PSNR is
20·log10(255/σ) on average: 24.61, 20.17 and 14.15 dB at σ 15, 25 and 50); the model's output is clamped to
[0, 1]; PSNR (data range 1) and SSIM (``models.metrics``) are computed per image and averaged over the set.
Salt & pepper and masking are the repository's own corruptions (``models.corruptions``, which stay in
[0, 1] by construction). The panel: Gaussian σ 15, 25 and 50, salt & pepper 0.2, masking 0.3.

Noise is drawn on the CPU by a generator seeded from (noise seed, image index): image i gets the same noise
whatever ``--limit``, ``--noise`` or model, so figures compare across models, and the baselines
(``training.photo_baselines``) denoise the very same noisy images.

Metric keys: ``gaussian@15/255`` (σ in 8-bit units over 255; a ``--level`` within 0.05/255 of a whole 8-bit σ
is taken as exactly that σ, so ``--level 0.098`` is ``gaussian@25/255`` and gives that row's figures; any
other level keys as ``gaussian@0.123``), ``salt_pepper@0.2``, ``masking@0.3`` (``training.evaluate.metric_key``).
In the model card (``--write-card``) they are prefixed with the test set's name, ``bsd68:gaussian@25/255``,
so the Set12 and the BSD68 figures sit side by side in ``test_metrics``; the baselines go under the card's
``baselines`` key (by test set), never into ``test_metrics``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.checkpoint import ModelCard, checkpoint_paths, read_card, write_card
from models.corruptions import DEFAULT_LEVELS, corrupt, make_generator, validate_level
from models.metrics import mse_per_image, psnr_per_image, ssim_per_image
from training.data import DataError
from training.evaluate import metric_key, to_float_batch
from training.photos import PHOTO_DATASETS, image_files, photo_folder, read_gray

PHOTO_TEST_SETS = ("set12", "bsd68")  # named photo test sets found under --data-root
PHOTO_PANEL: tuple[tuple[str, float], ...] = (
    ("gaussian", 15 / 255),
    ("gaussian", 25 / 255),
    ("gaussian", 50 / 255),
    ("salt_pepper", 0.2),
    ("masking", 0.3),
)
PHOTO_GAUSSIAN_DEFAULT = 25 / 255  # --noise gaussian without --level on photos
SNAP_8BIT = 0.05  # a Gaussian level this close (in 8-bit units) to a whole σ/255 is read as that σ
PROTOCOL = (
    "clean = 8-bit image / 255; Gaussian: noisy = clean + σ·N(0, 1), not clipped; salt_pepper, masking: "
    "models.corruptions; output clamped to [0, 1]; PSNR (data range 1) and SSIM per image, averaged"
)
Log = Callable[[str], None]


def log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def snap_level(noise: str, level: float) -> float:
    """A Gaussian σ within ``SNAP_8BIT``/255 of a whole number of 8-bit units becomes exactly that σ/255."""
    if noise == "gaussian":
        units = round(level * 255)
        if units > 0 and abs(level * 255 - units) <= SNAP_8BIT:
            return units / 255
    return level


def photo_key(noise: str, level: float) -> str:
    """``gaussian@25/255`` for a whole 8-bit σ, else ``metric_key``'s ``noise@level``."""
    if noise == "gaussian":
        units = level * 255
        if round(units) > 0 and abs(units - round(units)) < 1e-6:
            return f"gaussian@{round(units)}/255"
    return metric_key(noise, level)


def photo_panel(noise: str | None, level: float | None) -> list[tuple[str, float]]:
    """The panel ``--noise``/``--level`` ask for on photos; ``ValueError`` for a level outside [0, 1]."""
    if noise is None:
        return list(PHOTO_PANEL)
    if level is None:
        level = PHOTO_GAUSSIAN_DEFAULT if noise == "gaussian" else DEFAULT_LEVELS[noise]
    return [(noise, snap_level(noise, validate_level(level)))]


@dataclass
class TestPhotos:
    name: str  # the set's name: set12, bsd68, or the folder's name
    folder: Path
    files: list[Path]
    images: list[torch.Tensor]  # H×W uint8 each, in file-name order


def load_test_photos(dataset: str, data_root: str | Path, limit: int | None = None) -> TestPhotos:
    folder = photo_folder(dataset, data_root, named=(*PHOTO_TEST_SETS, *PHOTO_DATASETS))
    files = image_files(folder)
    if not files:
        raise DataError(f"data set {dataset!r}: {folder} holds no image files")
    files = files[:limit] if limit else files
    name = dataset if dataset in (*PHOTO_TEST_SETS, *PHOTO_DATASETS) else folder.name
    return TestPhotos(name, folder, files, [read_gray(path) for path in files])


def image_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator of image ``index``'s noise: depends on nothing but the seed and the index."""
    return make_generator(seed * 100_003 + index)


def add_photo_noise(clean: torch.Tensor, noise: str, level: float, generator: torch.Generator) -> torch.Tensor:
    """The papers' protocol: Gaussian noise added and NOT clipped; any other noise as ``models.corruptions``."""
    if noise == "gaussian":
        return clean + level * torch.randn(clean.shape, generator=generator, dtype=clean.dtype)
    return corrupt(clean, noise, level, generator)


def noisy_photo(
    image: torch.Tensor, noise: str, level: float, seed: int, index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, noisy) of one H×W uint8 image, both 1×1×H×W float32 on the CPU."""
    clean = to_float_batch(image[None])
    return clean, add_photo_noise(clean, noise, level, image_generator(seed, index))


def scores(output: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    """MSE, PSNR and SSIM of one 1×1×H×W output (already in [0, 1]) against the clean image."""
    return {
        "mse": mse_per_image(output, clean).item(),
        "psnr_db": psnr_per_image(output, clean).item(),
        "ssim": ssim_per_image(output, clean).item(),
    }


def mean_of(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def evaluate_photos(
    model: nn.Module, photos: list[torch.Tensor], noise: str, level: float, seed: int, device: torch.device
) -> dict[str, float]:
    """Mean figures of ``model`` over ``photos`` under one noise: each image alone, output clamped to [0, 1]."""
    rows = []
    for index, image in enumerate(photos):
        clean, noisy = noisy_photo(image, noise, level, seed, index)
        x = noisy.to(device)
        _sync(device)
        started = time.perf_counter()
        output = model(x).float().clamp(0.0, 1.0)
        _sync(device)
        seconds = time.perf_counter() - started
        row = scores(output.cpu(), clean)
        row["noisy_psnr_db"] = psnr_per_image(noisy, clean).item()
        row["seconds_per_image"] = seconds
        rows.append(row)
    return mean_of(rows)


@torch.inference_mode()
def warm_up(model: nn.Module, image: torch.Tensor, device: torch.device) -> None:
    """One untimed pass, so that the one-off start-up of the kernels is not counted in seconds per image."""
    model(to_float_batch(image[None]).to(device))
    _sync(device)


def run_photo_eval(
    args: argparse.Namespace, model: nn.Module, card: ModelCard, device: torch.device, command: str
) -> int:
    """``dae-eval`` on a photo test set: the panel, optionally the baselines, printed and written to the card."""
    try:
        panel = photo_panel(args.noise, args.level)
        photos = load_test_photos(args.dataset, args.data_root, args.limit)
        if args.baselines and any(noise == "none" for noise, _ in panel):
            raise ValueError("--baselines needs a noise to take away, not --noise none")
        if card.input_size is not None:
            raise ValueError(f"{card.name} takes only {card.input_size} images; photos need a model of any size")
    except (DataError, ValueError) as exc:
        print(f"dae-eval: error: {exc}", file=sys.stderr)
        return 2
    log = log_stderr
    warm_up(model, photos.images[0], device)
    results = {}
    for noise, level in panel:
        key = photo_key(noise, level)
        log(f"dae-eval: {card.name} on {photos.name} ({len(photos.images)} images), {key}")
        results[key] = evaluate_photos(model, photos.images, noise, level, args.seed, device)
    baselines = None
    if args.baselines:
        from training.photo_baselines import run_baselines

        try:
            baselines = run_baselines(photos, panel, args.seed, args.data_root, max(1, args.workers), log)
        except DataError as exc:
            print(f"dae-eval: error: --baselines: {exc}", file=sys.stderr)
            return 2
    summary: dict[str, Any] = {
        "checkpoint": card.name, "dataset": photos.name, "folder": str(photos.folder),
        "test_images": len(photos.images), "seed": args.seed, "protocol": PROTOCOL, "results": results,
    }  # fmt: skip
    if baselines is not None:
        summary["baselines"] = baselines
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_tables(summary)
    if args.write_card:
        record_in_card(args.checkpoint, summary, command)
    return 0


def print_tables(summary: dict[str, Any]) -> None:
    n = summary["test_images"]
    where = f"{n} image{'' if n == 1 else 's'} in {summary['folder']}, noise seed {summary['seed']}"
    print(f"{summary['checkpoint']} on {summary['dataset']} ({where})")
    print(f"protocol: {summary['protocol']}")
    print(f"{'noise':<18}{'noisy PSNR':>11}{'PSNR':>8}{'SSIM':>8}{'s/image':>9}")
    for key, r in summary["results"].items():
        print(f"{key:<18}{r['noisy_psnr_db']:>11.2f}{_figures(r)}")
    baselines = summary.get("baselines")
    if baselines is None:
        return
    print(f"\nbaselines on the same noisy images (tuned on {len(baselines['tuning_images'])} train400 images only)")
    figures = f"{'SSIM':>8}{'s/image':>9}"
    filters = "best classical filter (its setting)"
    print(f"{'noise':<18}{'BM3D PSNR':>12}{figures}   {filters:<42}{'PSNR':>8}{figures}")
    for key, b in baselines["results"].items():
        best = b["classical"]
        print(f"{key:<18}{'':<4}{_figures(b['BM3D'])}   {best['label']:<42}{_figures(best)}")


def _figures(r: dict[str, Any]) -> str:
    return f"{r['psnr_db']:>8.2f}{r['ssim']:>8.4f}{r['seconds_per_image']:>9.3f}"


def rounded(value: Any) -> Any:
    """Floats rounded to 5 decimals, through dicts and lists."""
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def record_in_card(checkpoint: str, summary: dict[str, Any], command: str) -> None:
    """The model's figures into ``test_metrics`` as ``<set>:<key>``; the baselines under ``baselines.<set>``."""
    _, card_path = checkpoint_paths(checkpoint)
    card = read_card(card_path)
    name = summary["dataset"]
    card.test_metrics.update({f"{name}:{key}": rounded(r) for key, r in summary["results"].items()})
    extra = card.model_extra or {}
    evaluation = dict(extra.get("evaluation", {}))
    photo_sets = dict(evaluation.get("photo_sets", {}))
    photo_sets[name] = {
        "command": command, "folder": summary["folder"], "test_images": summary["test_images"],
        "noise_seed": summary["seed"], "protocol": summary["protocol"],
    }  # fmt: skip
    evaluation["photo_sets"] = photo_sets
    card.evaluation = evaluation  # type: ignore[attr-defined]  # an extra field of the card
    if "baselines" in summary:
        baselines = dict(extra.get("baselines", {}))
        baselines[name] = rounded({"test_images": summary["test_images"], "noise_seed": summary["seed"],
                                   **summary["baselines"]})  # fmt: skip
        card.baselines = baselines  # type: ignore[attr-defined]  # an extra field of the card
    write_card(card, card_path)
