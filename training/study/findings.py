"""Plain-sentence findings, computed from the same numbers (and formatters) as the tables above them.

Nothing here is written by hand about the results: every claim is a comparison made in code, so the
sentences change when the numbers do. Absolute values are quoted as in the tables ("19.01 dB");
differences are always signed ("+1.20 dB").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from training.study.classical import METHODS, MODEL_ROWS, ClassicalResult
from training.study.experiments import NOISY, ScoreGrid, sweep_row
from training.study.features import FeatureResult
from training.study.iterative import VARIANTS, IterativeResult
from training.study.markdown import db, delta_db, ms, pct, ssim
from training.study.zoo import SIGMAS


def count(n: int, total: int) -> str:
    return f"{n} of {total}"


def mean_psnr(grid: ScoreGrid, row: str) -> float:
    return float(np.mean([grid[row, c].psnr for c in grid.cols]))


def headline(grid: ScoreGrid, short: Mapping[str, str]) -> list[str]:
    """Rows are noises, columns the noisy input and the models; ``short`` names the model columns."""
    sentences = []
    models = [c for c in grid.cols if c != NOISY]
    for noise in grid.rows:
        noisy = grid[noise, NOISY].psnr
        best = grid.best_col(noise, models)
        scores = " and ".join(f"{short[c]} {db(grid[noise, c].psnr)}" for c in models)
        top = grid[noise, best]
        sentences.append(
            f"On {noise} the noisy input scores {db(noisy)}; {scores}, so {short[best]} is best "
            f"({delta_db(top.psnr - noisy)} against the noisy input, SSIM {ssim(top.ssim)})."
        )
    wins = Counter(grid.best_col(noise, models) for noise in grid.rows)
    leader, n_wins = wins.most_common(1)[0]
    sentences.append(f"Overall {short[leader]} is best on {count(n_wins, len(grid.rows))} noise types.")
    return sentences


def dae_vs_ae(grid: ScoreGrid, ae: str, dae: str, clean_col: str) -> list[str]:
    noisy_cols = [c for c in grid.cols if c != clean_col]
    margins = {c: grid[dae, c].psnr - grid[ae, c].psnr for c in noisy_cols}
    widest = max(margins, key=lambda c: margins[c])
    ae_helps = sum(grid[ae, c].psnr > grid[NOISY, c].psnr for c in noisy_cols)
    clean_better = ae if grid[ae, clean_col].psnr >= grid[dae, clean_col].psnr else dae
    return [
        f"The denoising AE beats the standard AE on {count(sum(m > 0 for m in margins.values()), len(noisy_cols))} "
        f"noisy inputs; the widest margin is on {widest} ({db(grid[dae, widest].psnr)} against "
        f"{db(grid[ae, widest].psnr)}, {delta_db(margins[widest])}).",
        f"The standard AE's output is better than its noisy input on {count(ae_helps, len(noisy_cols))} noisy "
        + ("inputs: the 64-unit bottleneck alone removes some noise." if ae_helps else "inputs: it does not denoise."),
        f"On clean input the {clean_better.split(' (')[0]} reconstructs better "
        f"({db(grid[ae, clean_col].psnr)} standard, {db(grid[dae, clean_col].psnr)} denoising).",
    ]


def noise_level(grid: ScoreGrid) -> list[str]:
    trained = [sweep_row(s) for s in SIGMAS]
    best = {col: grid.best_row(col, trained) for col in grid.cols}
    per_col = "; ".join(
        f"for test {col} it is {best[col].removeprefix('trained at ')} ({db(grid[best[col], col].psnr)})"
        for col in grid.cols
    )
    diagonal = sum(best[col] == sweep_row(s) for col, s in zip(grid.cols, SIGMAS, strict=True))
    top = max(trained, key=lambda r: mean_psnr(grid, r))
    low_col, high_row, low_row = grid.cols[0], trained[-1], trained[0]
    high, noisy, matched = grid[high_row, low_col].psnr, grid[NOISY, low_col].psnr, grid[low_row, low_col].psnr
    verdict = (
        "so it does clean low noise" if high > noisy else "so at low noise it makes the image worse than the input"
    )
    return [
        f"The best training σ per test σ: {per_col}. The matching σ is best in {count(diagonal, len(SIGMAS))} columns.",
        f"Averaged over all five test levels the best training level is σ {top.removeprefix('trained at σ ')} "
        f"(mean {db(mean_psnr(grid, top))}).",
        f"The model trained at σ {SIGMAS[-1]:g} scores {db(high)} on {low_col} input against {db(noisy)} for the noisy "
        f"input itself, {verdict}; the model trained at σ {SIGMAS[0]:g} scores {db(matched)} there "
        f"({delta_db(high - matched)} for the high-noise model).",
    ]


def robustness(grid: ScoreGrid, specialists: Mapping[str, str]) -> list[str]:
    """``specialists`` maps a column (noise label) to the row of the MLP trained on that noise."""
    mlp_rows = list(specialists.values())
    own_best = sum(grid.best_row(col, mlp_rows) == row for col, row in specialists.items())
    drops = {(r, c): grid[specialists[c], c].psnr - grid[r, c].psnr for c in grid.cols for r in mlp_rows}
    worst_row, worst_col = max(drops, key=lambda k: drops[k])
    mixed_gap = float(np.mean([grid["mlp-mixed", c].psnr - grid[specialists[c], c].psnr for c in grid.cols]))
    conv_wins = sum(
        grid["conv-blind", c].psnr > max(grid[r, c].psnr for r in [*mlp_rows, "mlp-mixed"]) for c in grid.cols
    )
    return [
        f"The MLP trained on a noise is the best of the three specialists on that noise in "
        f"{count(own_best, len(grid.cols))} columns.",
        f"The largest cost of a mismatched noise: {worst_row} on {worst_col} scores "
        f"{db(grid[worst_row, worst_col].psnr)} against {db(grid[specialists[worst_col], worst_col].psnr)} for the "
        f"matching specialist ({delta_db(-drops[worst_row, worst_col])}).",
        f"The blind mlp-mixed is on average {delta_db(mixed_gap)} from the matching specialist, and the blind "
        f"conv-blind beats every MLP on {count(conv_wins, len(grid.cols))} noise types.",
    ]


def blind(grid: ScoreGrid, unseen: Sequence[str], specialists: Sequence[str]) -> list[str]:
    models = [r for r in grid.rows if r != NOISY]
    mixed_wins = sum(grid["mlp-mixed", c].psnr > max(grid[s, c].psnr for s in specialists) for c in grid.cols)
    best_unseen = "; ".join(
        f"on {c} {grid.best_row(c, models)} ({db(grid[grid.best_row(c, models), c].psnr)})" for c in unseen
    )
    top = max(models, key=lambda r: mean_psnr(grid, r))
    return [
        f"The one mlp-mixed model beats all three MLP specialists on {count(mixed_wins, len(grid.cols))} conditions.",
        f"On the conditions no model was trained on, the best is: {best_unseen}.",
        f"Averaged over all {len(grid.cols)} conditions {top} is best (mean {db(mean_psnr(grid, top))}).",
    ]


def features(result: FeatureResult, probe_noise: str) -> list[str]:
    dae, ae = result.rows
    smoother = (dae if dae.roughness < ae.roughness else ae).label.split(" (")[0]
    return [
        f"A linear probe reads the digit class from the denoising AE's 64-d code with {pct(dae.probe_clean)} test "
        f"accuracy, and from the standard AE's with {pct(ae.probe_clean)}.",
        f"On the codes of noisy test images ({probe_noise}) the same probes keep {pct(dae.probe_noisy)} (denoising) "
        f"and {pct(ae.probe_noisy)} (standard).",
        f"The {smoother}'s first-layer filters are the smoother ones (roughness {dae.roughness:.2f} denoising, "
        f"{ae.roughness:.2f} standard; white noise ≈ 3.9).",
        f"Latent units: {dae.active_units} active with mean |r| {dae.mean_abs_corr:.3f} (denoising) against "
        f"{ae.active_units} active with mean |r| {ae.mean_abs_corr:.3f} (standard).",
    ]


def iterative(result: IterativeResult) -> list[str]:
    sentences = []
    for variant in VARIANTS:
        runs = result.scores[variant]
        k = result.best_pass(variant)
        if k == 1:
            tail = f"one pass is best and every further pass lowers PSNR, to {db(runs[-1].psnr)} after {len(runs)}"
        else:
            helping = "pass 2 helps" if k == 2 else f"passes 2 to {k} help"
            tail = f"{helping}, peaking at {db(runs[k - 1].psnr)}; after {len(runs)} passes it is {db(runs[-1].psnr)}"
        sentences.append(f"{variant.capitalize()} passes: one pass gives {db(runs[0].psnr)}; {tail}.")
    sentences.append(f"For reference the noisy input scores {db(result.noisy.psnr)}.")
    return sentences


def classical(result: ClassicalResult, specialist_row: str) -> list[str]:
    grid, methods = result.grid, list(METHODS)
    sentences = []
    for col in grid.cols:
        best_classical = grid.best_row(col, methods)
        best_model = grid.best_row(col, list(MODEL_ROWS))
        sentences.append(
            f"On {col} the best classical denoiser is {best_classical} ({db(grid[best_classical, col].psnr)}) "
            f"and the best model {best_model.split(' (')[0]} ({db(grid[best_model, col].psnr)})."
        )
    gaussian_col = grid.cols[0]
    mlp, bm3d = grid[specialist_row, gaussian_col].psnr, grid["BM3D", gaussian_col].psnr
    sentences.append(
        f"On {gaussian_col}, where BM3D is given the true σ, the matching MLP scores {db(mlp)} against BM3D's "
        f"{db(bm3d)} ({delta_db(mlp - bm3d)}), in {ms(result.seconds_per_image[specialist_row])} per image "
        f"against BM3D's {ms(result.seconds_per_image['BM3D'])}."
    )
    return sentences


def fashion(grid: ScoreGrid, short: Mapping[str, str], mnist: ScoreGrid, conv: str) -> list[str]:
    sentences = headline(grid, short)
    gaussian = grid.rows[0]
    on_fashion, on_mnist = grid[gaussian, conv].psnr, mnist[gaussian, "conv-blind"].psnr
    sentences.append(
        f"conv-blind, trained on MNIST, scores {db(on_fashion)} on Fashion-MNIST {gaussian} against "
        f"{db(on_mnist)} on MNIST (section 1), {delta_db(on_fashion - on_mnist)} on the unfamiliar data set."
    )
    return sentences
