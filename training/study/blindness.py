"""The blindness matrix: what not knowing the noise costs, measured apart from the architecture.

The same U-Net (``conv``, conv-blind's recipe) three ways: blind (``conv-blind``, trained on ``mixed``), a
specialist per noise type (trained on that type at its reference level), and told the noise level as an input
channel (``conv-level``, FFDNet's idea, trained on ``mixed``). The MLPs, blind and specialist, give the same
contrast for the other architecture. Every level from light to beyond training, for each noise type.
"""

from __future__ import annotations

from collections.abc import Callable

from training.study import classical, figures
from training.study.experiments import CONV_SPECIALISTS, NOISY, SPECIALISTS, ScoreGrid, headline
from training.study.findings import diff, worse_than_input
from training.study.markdown import CELL_NOTE, Figure, Section, Table, caption, db
from training.study.scoring import Noise
from training.study.sections import Study, grid_table
from training.study.stats import Interval, bootstrap, mean_over, rank
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


# The U-Nets of the matrix, each condition's own: the classical methods are compared with these.
UNET_PICKS: classical.ModelPicks = {
    BLIND: lambda _: "conv-blind",
    SPECIALIST: lambda n: CONV_SPECIALISTS[n.kind],
    TOLD: lambda _: "conv-level",
}


def classical_findings(result: classical.ClassicalResult) -> list[str]:
    """Per condition, the best tuned classical method against the best of the three U-Nets."""
    grid = result.grid
    methods = list(classical.METHODS)
    versus_unets = {}
    for col in grid.cols:
        best_unet = rank({m: grid[m, col].values() for m in UNET_PICKS}).leader
        best_classical = rank({m: grid[m, col].values() for m in methods}).leader
        versus_unets[col] = diff(grid[best_classical, col], grid[best_unet, col])
    behind = sorted(versus_unets, key=lambda c: versus_unets[c].delta)[0]
    gaussian = [c for c in grid.cols if c.startswith("Gaussian")]
    effective = {c: diff(grid[classical.EFFECTIVE_BM3D, c], grid["BM3D", c]) for c in gaussian}
    examples = "".join(
        f"; {c} {effective[c].render()} ({db(grid['BM3D', c].psnr)} → {db(grid[classical.EFFECTIVE_BM3D, c].psnr)})"
        for c in gaussian[:3]
    )
    return [
        f"Tuned on train images for each condition, the classical method with the highest mean PSNR, against the "
        f"U-Net with the highest, is {tally(versus_unets)} of {len(grid.cols)} conditions; furthest behind on {behind} "
        f"({versus_unets[behind].render()}).",
        f"BM3D given the effective σ of the clipped noise rather than the nominal σ, on the Gaussian conditions: "
        f"{tally(effective)}{examples}.",
    ]


def classical_table(study: Study) -> tuple[Table, list[str]]:
    """The classical methods, tuned per condition, beside the U-Nets on a sample of the test images."""
    sample = study.mnist.sample(study.cfg.scale.classical_sample)
    noises = NOISES if not study.cfg.quick else NOISES[::4]  # BM3D dominates: a smoke run takes a few
    result = classical.classical_study(
        study.scorer,
        sample,
        study.tuning_images(),
        study.cfg.workers,
        study.log,
        noises,
        UNET_PICKS,
        study.classical_runs,
    )
    what = (
        f"{CELL_NOTE}; models: seed 0 only; classical parameters tuned on {result.tuning_images} noisy train images "
        'for each condition (section "Classical denoisers" lists the grids)'
    )
    note = caption(sample, study.cfg.command, what, study.cfg.eval_seeds[:1])
    table = grid_table(result.grid.transposed(), "test noise", note)
    table.title = "Classical methods tuned per condition, beside the U-Nets"
    return table, classical_findings(result)


def blindness_section(study: Study) -> Section:
    grid = headline(study.scorer, study.mnist, NOISES, COLUMNS)
    classical_rows, classical_sentences = classical_table(study)
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
        "with the architecture held fixed? And how far behind are the classical methods, each tuned for the condition?",
        [grid_table(grid, "test noise", study.caption(study.mnist, f"{CELL_NOTE}; {what}")), classical_rows],
        [Figure("blindness.png", f"{title}: mean PSNR (dB, colour and upper number) and SSIM (lower number).")],
        blindness_findings(grid) + classical_sentences,
    )
