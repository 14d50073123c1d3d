"""The blindness matrix: what not knowing the noise costs, measured apart from the architecture.

The same U-Net (``conv``, conv-blind's recipe) three ways: blind (``conv-blind``, trained on ``mixed``), a
specialist per noise type (trained on that type at its reference level), and told the noise level as an input
channel (``conv-level``, FFDNet's idea, trained on ``mixed``). The MLPs, blind and specialist, give the same
contrast for the other architecture. Every level from light to beyond training, for each noise type.
"""

from __future__ import annotations

from collections.abc import Callable

from training.study import figures
from training.study.experiments import CONV_SPECIALISTS, NOISY, SPECIALISTS, ScoreGrid, headline
from training.study.findings import diff, worse_than_input
from training.study.markdown import CELL_NOTE, Figure, Section
from training.study.scoring import Noise
from training.study.sections import Study, grid_table
from training.study.stats import Interval, bootstrap, mean_over
from training.study.zoo import SPEC_BY_NAME

LEVELS = {
    "gaussian": (0.05, 0.1, 0.2, 0.3, 0.5, 0.7),
    "salt_pepper": (0.1, 0.2, 0.3, 0.5, 0.7),
    "masking": (0.1, 0.2, 0.3, 0.5, 0.7),
}
NOISES = tuple(Noise.of(kind, level) for kind, levels in LEVELS.items() for level in levels)
BLIND, SPECIALIST, TOLD = "conv-blind", "U-Net specialist", "conv-level (told the level)"
MLP_SPECIALIST, MLP_BLIND = "MLP specialist", "mlp-mixed"
COLUMNS: dict[str, Callable[[Noise], str | None]] = {
    NOISY: lambda _: None,
    BLIND: lambda _: "conv-blind",
    SPECIALIST: lambda n: CONV_SPECIALISTS[n.kind],
    TOLD: lambda _: "conv-level",
    MLP_SPECIALIST: lambda n: SPECIALISTS[n.kind],
    MLP_BLIND: lambda _: "mlp-mixed",
}


def own_level(noise: Noise) -> bool:
    """Whether this is the level the matching specialist was trained at."""
    return abs(SPEC_BY_NAME[CONV_SPECIALISTS[noise.kind]].level - noise.steps[0][1]) < 1e-9


def tally(intervals: dict[str, Interval]) -> str:
    wins = sum(iv.above_zero for iv in intervals.values())
    losses = sum(iv.below_zero for iv in intervals.values())
    return f"ahead on {wins}, behind on {losses} and indistinguishable on {len(intervals) - wins - losses}"


def blindness_findings(grid: ScoreGrid) -> list[str]:
    rows = grid.rows
    blind_cost = {r: diff(grid[r, BLIND], grid[r, SPECIALIST]) for r in rows}
    at_own = "; ".join(f"{r} {blind_cost[r].render()}" for r, n in zip(rows, NOISES, strict=True) if own_level(n))
    told = {r: diff(grid[r, TOLD], grid[r, BLIND]) for r in rows}
    told_mean = bootstrap(mean_over([grid[r, TOLD].values() for r in rows]),
                          mean_over([grid[r, BLIND].values() for r in rows]))  # fmt: skip
    arch = {r: diff(grid[r, SPECIALIST], grid[r, MLP_SPECIALIST]) for r in rows}
    models = [c for c in grid.cols if c != NOISY]
    transposed = ScoreGrid(grid.cols, rows, {(c, r): grid[r, c] for c in grid.cols for r in rows})
    return [
        f"The cost of blindness, same U-Net: conv-blind minus the U-Net specialist for that noise is, at each "
        f"specialist's own training level, {at_own}; over all {len(rows)} conditions conv-blind is "
        f"{tally(blind_cost)}.",
        f"Told the level, the same U-Net against conv-blind is {tally(told)} (mean over the conditions "
        f"{told_mean.render()}).",
        f"Architecture at equal knowledge: the U-Net specialist against the MLP specialist is {tally(arch)}.",
        worse_than_input(transposed, models),
    ]


def blindness_section(study: Study) -> Section:
    grid = headline(study.scorer, study.mnist, NOISES, COLUMNS)
    rows = list(COLUMNS)
    transposed = ScoreGrid(rows, grid.rows, {(m, n): grid[n, m] for m in rows for n in grid.rows})
    title = "Blind, specialist and level-aware models per test condition"
    figures.heatmap(study.figure("blindness.png"), title, transposed.psnr(), (rows, grid.rows),
                    ("model", "test noise"), second=transposed.ssim())  # fmt: skip
    what = (
        "the specialist columns take, in each row, the model trained on that row's noise type (Gaussian σ 0.3, "
        "salt & pepper p 0.2, masking p 0.3); conv-level is given the row's level"
    )
    return Section(
        "blindness",
        "The blindness matrix",
        "What does a blind model give up against one trained on the very noise, and against one told its level, "
        "with the architecture held fixed? Classical methods tuned per condition are not yet in this matrix.",
        [grid_table(grid, "test noise", study.caption(study.mnist, f"{CELL_NOTE}; {what}"))],
        [Figure("blindness.png", f"{title}: mean PSNR (dB, colour and upper number) and SSIM (lower number).")],
        blindness_findings(grid),
    )
