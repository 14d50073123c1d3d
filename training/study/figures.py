"""The report's figures, PNG, drawn with matplotlib's object API (no pyplot state, no display needed).

Each function takes plain numbers or images and a path, and writes one figure with a title, axis
labels with units, and a colour bar wherever colour encodes a value (error maps, heat maps, weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from models.metrics import psnr_db_from_mse

DPI = 110
ERROR_CMAP = "magma"


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    return path


def as_images(batch: torch.Tensor | np.ndarray) -> np.ndarray:
    """N×1×H×W or N×H×W, tensor or array → N×H×W float array."""
    array = batch.detach().cpu().float().numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
    return array.reshape(len(array), *array.shape[-2:])


def bare(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def image_grid(
    path: Path,
    title: str,
    rows: Sequence[tuple[str, torch.Tensor | np.ndarray]],
    header: Sequence[str] = (),
    notes: Sequence[Sequence[str]] = (),
) -> Path:
    """Rows of grayscale images (intensity 0–1), labelled on the left; optional column ``header`` above the
    first row and a note under each image (``notes[row][col]``, e.g. its PSNR).

    Each row is drawn as one tiled image: one axes per row instead of per image keeps a 10×8 grid fast.
    """
    images = [as_images(batch) for _, batch in rows]
    n_cols = max(len(r) for r in images)
    h, w = images[0].shape[-2:]
    row_height = 1.05 + 0.2 * bool(notes)
    fig = Figure(figsize=(0.95 * n_cols + 1.6, row_height * len(rows) + 0.5 + 0.25 * bool(header)))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    centres = [c * (w + 2) + w / 2 for c in range(n_cols)]
    for r, (ax, (label, _), row_images) in enumerate(zip(axes, rows, images, strict=True)):
        ax.imshow(mosaic(row_images, n_cols, gap=2, fill=1.0), cmap="gray", vmin=0.0, vmax=1.0)
        bare(ax)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10)
        for x, text in zip(centres, notes[r] if notes else [], strict=False):
            ax.text(x, h + 1, text, ha="center", va="top", fontsize=8)
    for x, text in zip(centres, header, strict=False):
        axes[0].text(x, -2, text, ha="center", va="bottom", fontsize=9, fontweight="bold")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return save(fig, path)


def error_maps(path: Path, title: str, panels: Sequence[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]) -> Path:
    """Per noise: clean, noisy, denoised, and the absolute errors of noisy and denoised against clean."""
    headers = ["clean", "noisy", "denoised", "|noisy − clean|", "|denoised − clean|"]
    fig = Figure(figsize=(10.5, 2.3 * len(panels) + 0.6))
    axes = fig.subplots(len(panels), 5, squeeze=False)
    error_image = None
    for r, (label, clean, noisy, denoised) in enumerate(panels):
        c, n, d = (as_images(x)[0] for x in (clean, noisy, denoised))
        for col, image in enumerate((c, n, d)):
            axes[r][col].imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
        for col, image in ((3, np.abs(n - c)), (4, np.abs(d - c))):
            error_image = axes[r][col].imshow(image, cmap=ERROR_CMAP, vmin=0.0, vmax=1.0)
        for col, image in ((1, n), (2, d)):
            mse = float(((image - c) ** 2).mean())
            axes[r][col].set_xlabel(f"PSNR {psnr_db_from_mse(mse):.1f} dB", fontsize=9)
        for col, ax in enumerate(axes[r]):
            bare(ax)
            if r == 0:
                ax.set_title(headers[col], fontsize=10)
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10)
    if error_image is not None:
        bar = fig.colorbar(error_image, ax=axes[:, 3:].ravel().tolist(), shrink=0.8)
        bar.set_label("absolute error (intensity, 0–1)")
    fig.suptitle(title, fontsize=12)
    return save(fig, path)


def heatmap(
    path: Path,
    title: str,
    matrix: np.ndarray,
    labels: tuple[Sequence[str], Sequence[str]],
    axis_labels: tuple[str, str],
    bar_label: str = "mean PSNR (dB)",
    second: np.ndarray | None = None,
    diverging: bool = False,
) -> Path:
    """A matrix of values, each cell annotated (with ``second``, e.g. the SSIM, under it); ``labels`` and
    ``axis_labels`` are (rows, columns). ``diverging`` centres a red-blue scale on 0, for gains that can be
    negative (a denoiser worse than its input is red)."""
    row_labels, col_labels = labels
    fig = Figure(figsize=(1.5 * len(col_labels) + 3.0, (0.75 if second is not None else 0.6) * len(row_labels) + 1.8))
    ax = fig.subplots()
    if diverging:
        limit = float(np.nanmax(np.abs(matrix))) or 1.0
        image = ax.imshow(matrix, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    else:
        image = ax.imshow(matrix, cmap="viridis", aspect="auto")
    low, high = float(np.nanmin(matrix)), float(np.nanmax(matrix))
    for (i, j), value in np.ndenumerate(matrix):
        # white text on the dark end of the scale (both ends of a diverging one)
        spread = abs(value) / max(abs(low), abs(high), 1e-12) if diverging else 1 - (value - low) / (high - low + 1e-12)
        dark = spread > 0.6 if diverging else spread > 0.4
        text = f"{value:+.2f}" if diverging else f"{value:.2f}"
        if second is not None:
            text += f"\n{second[i, j]:.3f}"
        ax.text(j, i, text, ha="center", va="center", color="white" if dark else "black", fontsize=8)
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=20, ha="right")
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_ylabel(axis_labels[0])
    ax.set_xlabel(axis_labels[1])
    ax.set_title(title)
    fig.colorbar(image, ax=ax).set_label(bar_label)
    fig.tight_layout()
    return save(fig, path)


def grouped_bars(
    path: Path, title: str, groups: Sequence[str], series: Mapping[str, Sequence[float]], ylabel: str
) -> Path:
    """One group of bars per x label, one bar per series, each bar labelled with its value."""
    fig = Figure(figsize=(1.6 * len(groups) + 2.5, 4.2))
    ax = fig.subplots()
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, labels=[f"{v:.1f}" if np.isfinite(v) else "" for v in values], fontsize=7)
    ax.set_xticks(x, groups, rotation=15, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_xlabel("test input")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


Panel = tuple[str, Mapping[str, Sequence[float]], float | None]  # y label, named curves, baseline


def line_panels(path: Path, title: str, x: Sequence[int], xlabel: str, panels: Sequence[Panel]) -> Path:
    """Side-by-side line plots over the same x, each with an optional dashed baseline (the noisy input)."""
    fig = Figure(figsize=(5.2 * len(panels), 4.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (ylabel, curves, baseline) in zip(axes, panels, strict=True):
        for name, values in curves.items():
            ax.plot(x, values, marker="o", label=name)
        if baseline is not None:
            ax.axhline(baseline, color="grey", linestyle="--", label="noisy input")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_xticks(list(x))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def mosaic(images: np.ndarray, cols: int, gap: int = 1, fill: float = np.nan) -> np.ndarray:
    """Tile N×H×W into one image, ``gap`` pixels of ``fill`` between tiles (NaN: the background colour)."""
    n, h, w = images.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), fill, dtype=float)
    for k, image in enumerate(images):
        r, c = divmod(k, cols)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = image
    return out


def filter_grids(
    path: Path, title: str, filters: Mapping[str, np.ndarray], dead: Mapping[str, int] | None = None
) -> Path:
    """First-layer weights as images, each unit scaled by its own largest |weight| (so −1…1); ``dead``: how many
    of the shown units never fire, named in each panel's title."""
    fig = Figure(figsize=(6.0 * len(filters), 6.4))
    axes = fig.subplots(1, len(filters), squeeze=False)[0]
    image = None
    for ax, (label, weights) in zip(axes, filters.items(), strict=True):
        scaled = weights / np.abs(weights).reshape(len(weights), -1).max(axis=1).clip(min=1e-12)[:, None, None]
        image = ax.imshow(mosaic(scaled, int(np.ceil(np.sqrt(len(weights))))), cmap="RdBu_r", vmin=-1, vmax=1)
        bare(ax)
        note = f"\n{dead[label]} of them dead (never fire: random initial weights)" if dead is not None else ""
        ax.set_title(f"{label}\nfirst {len(weights)} of the 784→256 layer's units{note}")
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.7).set_label("weight / the unit's largest |weight|")
    fig.suptitle(title)
    return save(fig, path)


def correlation_maps(path: Path, title: str, matrices: Mapping[str, np.ndarray]) -> Path:
    """Latent-unit correlation matrices; dead units (constant zero) are blank."""
    fig = Figure(figsize=(5.5 * len(matrices) + 1.0, 5.0))
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    image = None
    for ax, (label, matrix) in zip(axes, matrices.items(), strict=True):
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(label)
        ax.set_xlabel("latent unit")
        ax.set_ylabel("latent unit")
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8).set_label("Pearson r on the clean test images")
    fig.suptitle(title)
    return save(fig, path)
