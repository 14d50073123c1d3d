"""Unseen noise, and the tutorial's question: can you build a universal denoiser?

"Unseen" means unseen by every model of the study: levels above everything trained (``mixed`` draws each type
up to 0.5, so 0.6 and 0.7), noise types nothing is trained on (Poisson, speckle, blur, JPEG, column stripes:
``eval_noises``), and combinations of noises. The answer is read off the gain of each model over its own
noisy input, seen noise against unseen, with paired-bootstrap intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from models.corruptions import NOISES
from models.metrics import psnr_per_image
from training.study import figures
from training.study.experiments import CONV_SPECIALISTS, NOISY, ScoreGrid, headline
from training.study.findings import diff
from training.study.markdown import Figure, Section
from training.study.scoring import REFERENCE_NOISES, Noise
from training.study.sections import Study, grid_table
from training.study.stats import Interval, mean_over, rank, signed
from training.study.zoo import max_trained_level

BEYOND_LEVELS = tuple(Noise.of(kind, level) for kind in ("gaussian", "salt_pepper", "masking") for level in (0.6, 0.7))
NEW_TYPES = (
    Noise.of("poisson", 10),
    Noise.of("speckle", 0.5),
    Noise.of("blur", 1.0),
    Noise.of("jpeg", 10),
    Noise.of("stripes", 0.3),
)
COMBINATIONS = (
    Noise((("gaussian", 0.3), ("masking", 0.3))),
    Noise((("blur", 1.0), ("gaussian", 0.2))),
    Noise((("gaussian", 0.2), ("jpeg", 20))),
    Noise((("salt_pepper", 0.1), ("stripes", 0.2))),
)
GROUPS: dict[str, tuple[Noise, ...]] = {
    "seen (trained on by conv-blind)": REFERENCE_NOISES,
    "levels beyond training": BEYOND_LEVELS,
    "noise types never trained": NEW_TYPES,
    "combinations": COMBINATIONS,
}
UNSEEN = (*BEYOND_LEVELS, *NEW_TYPES, *COMBINATIONS)
CANDIDATE = "conv-blind"  # the most general model of the study: blind, convolutional, trained on every type
MODELS: dict[str, str] = {
    "conv-blind": "conv-blind",
    "mlp-mixed": "mlp-mixed",
    "conv-gaussian (U-Net, Gaussian σ 0.3 only)": CONV_SPECIALISTS["gaussian"],
}


def is_unseen(noise: Noise) -> bool:
    """No model trains on it: a combination, a type outside the training registry, or a level above all trained."""
    if len(noise.steps) != 1:
        return True
    kind, level = noise.steps[0]
    trained_types = [name for name, registered in NOISES.items() if registered.specialist]  # what mixed draws too
    return kind not in trained_types or level > max_trained_level(kind)


def fixed(name: str | None) -> Callable[[Noise], str | None]:
    """A column that shows the same model (or the noisy input) whatever the row's noise."""
    return lambda _: name


def universal_grid(study: Study) -> ScoreGrid:
    columns = {NOISY: fixed(None), **{label: fixed(name) for label, name in MODELS.items()}}
    noises = [noise for group in GROUPS.values() for noise in group]
    return headline(study.scorer, study.mnist, noises, columns)


def gains(grid: ScoreGrid, model: str) -> dict[str, Interval]:
    """The model's output minus its noisy input, per condition (rows)."""
    return {row: diff(grid[row, model], grid[row, NOISY]) for row in grid.rows}


def gain_range(intervals: Sequence[Interval]) -> str:
    deltas = [iv.delta for iv in intervals]
    return f"{signed(min(deltas))} to {signed(max(deltas))} dB"


def answer(grid: ScoreGrid) -> list[str]:
    """The direct answer, from the candidate's gains over its input on seen and unseen noise."""
    by_row = gains(grid, CANDIDATE)
    seen = [by_row[n.label] for n in GROUPS["seen (trained on by conv-blind)"]]
    sentences = [f"On the noise it was trained on, {CANDIDATE} gains {gain_range(seen)} over its input."]
    for group, noises in list(GROUPS.items())[1:]:
        ivs = {n.label: by_row[n.label] for n in noises}
        better = sum(iv.above_zero for iv in ivs.values())
        worst = min(ivs, key=lambda label: ivs[label].delta)
        sentences.append(
            f"On {group} it gains {gain_range(list(ivs.values()))} (better than its input on {better} of {len(ivs)}; "
            f"the least on {worst}: {ivs[worst].render()})."
        )
    unseen = [by_row[n.label] for n in UNSEEN]
    improved, worse = sum(iv.above_zero for iv in unseen), sum(iv.below_zero for iv in unseen)
    models = [c for c in grid.cols if c != NOISY]
    overall = rank({m: _mean_gain(grid, m) for m in models})
    if improved == len(unseen):
        verdict = (
            f"**Can you build a universal denoiser? Within these conditions, yes:** {CANDIDATE} improves every one of "
            f"the {len(unseen)} unseen conditions, by less than on the noise it knows ({gain_range(unseen)} against "
            f"{gain_range(seen)})."
        )
    else:
        verdict = (
            f"**Can you build a universal denoiser? Not by training on a few noises:** {CANDIDATE}, the most general "
            f"model here, improves {improved} of the {len(unseen)} unseen conditions and makes {worse} measurably "
            f"worse; its gain over the input is {gain_range(seen)} on the noise it knows and {gain_range(unseen)} on "
            "noise it does not. What blind training buys is robustness over the family of noises trained on, not "
            "beyond it."
        )
    sentences.insert(0, verdict)
    sentences.append(f"Averaged over the unseen conditions, the gain over the input ranks: {overall.sentence()}.")
    return sentences


def _mean_gain(grid: ScoreGrid, model: str) -> np.ndarray:
    """Per-image gain over the input, averaged over the unseen conditions (the same images in each)."""
    return mean_over([grid[n.label, model].values() - grid[n.label, NOISY].values() for n in UNSEEN])


def example_figure(study: Study, path: str) -> None:
    """One test digit per condition (rows): clean, noisy and every model's output, each with its PSNR."""
    clean = study.mnist.clean[:1]
    shown, notes = [], []
    for group in GROUPS.values():
        for noise in group:
            noisy = study.mnist.noisy(noise)[:1]
            outputs = [noisy, *(study.scorer.denoise(name, noisy, noise) for name in MODELS.values())]
            shown.append((noise.label, torch.cat([clean, *outputs])))
            notes.append(["", *(f"{float(psnr_per_image(o, clean)[0]):.1f} dB" for o in outputs)])
    # two-line names: one-line ones overlap over 28-pixel columns
    header = ["clean", "noisy", *(label.split(" (")[0].replace("-", "\n", 1) for label in MODELS)]
    figures.image_grid(study.figure(path), "Seen and unseen noise on one test digit (PSNR under each)", shown,
                       header, notes)  # fmt: skip


def universal_section(study: Study) -> Section:
    grid = universal_grid(study)
    gain = gains(grid, CANDIDATE)
    table = grid_table(
        grid, "test noise", study.caption(study.mnist),
        {f"{CANDIDATE} − noisy input, 95% interval": lambda row: gain[row].render()},
    )  # fmt: skip
    rows = [NOISY, *MODELS]  # the heat map has models as rows, like the other sections' maps
    transposed = ScoreGrid(rows, grid.rows, {(m, n): grid[n, m] for m in rows for n in grid.rows})
    title = "Seen and unseen noise: the noisy input and the blind models"
    figures.heatmap(study.figure("unseen.png"), title, transposed.psnr(), (rows, grid.rows), ("model", "test noise"),
                    second=transposed.ssim())  # fmt: skip
    example_figure(study, "unseen_examples.png")
    groups = "; ".join(f"{group}: {', '.join(n.label for n in noises)}" for group, noises in GROUPS.items())
    return Section(
        "unseen",
        "Unseen noise: is there a universal denoiser?",
        "Can one model denoise noise it was never trained on? The conditions, by group: " + groups + ". The last "
        f"column is {CANDIDATE}'s gain over its own input with its 95% paired-bootstrap interval.",
        [table],
        [
            Figure("unseen.png", f"{title}: mean PSNR (dB, colour and upper number) and SSIM (lower number)."),
            Figure(
                "unseen_examples.png",
                "One test digit under each condition: clean, noisy, and each model's output (seed 0), with its PSNR.",
            ),
        ],
        answer(grid),
    )
