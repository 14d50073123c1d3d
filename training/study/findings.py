"""Plain-sentence findings, computed from the same numbers (and formatters) as the tables above them.

Nothing here is written by hand about the results: every claim is a comparison made in code, so the
sentences change when the numbers do. Absolute values are quoted as in the tables ("19.01 dB");
differences are always signed and carry their 95% paired-bootstrap interval ("+1.20 dB [+0.98, +1.41]").
A method is called best, or said to beat another, only when that interval excludes 0 (``stats``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from training.study.classical import EFFECTIVE_BM3D, METHODS, MODEL_ROWS, ClassicalResult
from training.study.experiments import NOISY, ScoreGrid, sweep_row
from training.study.features import FeatureResult
from training.study.iterative import VARIANTS, IterativeResult
from training.study.markdown import db, pct, ssim
from training.study.scoring import Score
from training.study.stats import Interval, against_input, bootstrap, mean_over, rank, versus
from training.study.zoo import SIGMAS


def count(n: int, total: int) -> str:
    return f"{n} of {total}"


def mean_psnr(grid: ScoreGrid, row: str) -> float:
    return float(np.mean([grid[row, c].psnr for c in grid.cols]))


def diff(a: Score, b: Score, metric: str = "psnr", paired: bool = True) -> Interval:
    """mean(a) − mean(b) with its interval, from the per-image values both scores kept."""
    return bootstrap(a.values(metric), b.values(metric), paired=paired)


def row_values(grid: ScoreGrid, row: str, cols: Sequence[str] | None = None) -> np.ndarray:
    """A row's per-image PSNR averaged over its columns (the same images in every column)."""
    return mean_over([grid[row, c].values() for c in cols or grid.cols])


def headline(grid: ScoreGrid, short: Mapping[str, str]) -> list[str]:
    """Rows are noises, columns the noisy input and the models; ``short`` names the model columns."""
    sentences = []
    models = [c for c in grid.cols if c != NOISY]
    clear_wins: Counter[str] = Counter()
    for noise in grid.rows:
        noisy = grid[noise, NOISY]
        ranking = rank({c: grid[noise, c].values() for c in models})
        top = grid[noise, ranking.leader]
        scores = ", ".join(f"{short[c]} {db(grid[noise, c].psnr)}" for c in models)
        sentences.append(
            f"On {noise} the noisy input scores {db(noisy.psnr)}; {scores}: {ranking.sentence(short.__getitem__)}; "
            f"{short[ranking.leader]} is {against_input(diff(top, noisy))} (SSIM {ssim(top.ssim)} against "
            f"{ssim(noisy.ssim)})."
        )
        if ranking.clear:
            clear_wins[ranking.leader] += 1
    if clear_wins:
        leader, n_wins = clear_wins.most_common(1)[0]
        sentences.append(
            f"Overall {short[leader]} is best, its interval clear of every other model, on "
            f"{count(n_wins, len(grid.rows))} noise types."
        )
    else:
        sentences.append("No model is ahead of all the others, beyond its interval, on any noise type.")
    return sentences


def dae_vs_ae(grid: ScoreGrid, ae: str, dae: str, clean_col: str) -> list[str]:
    noisy_cols = [c for c in grid.cols if c != clean_col]
    margins = {c: diff(grid[dae, c], grid[ae, c]) for c in noisy_cols}
    wins, losses = sum(m.above_zero for m in margins.values()), sum(m.below_zero for m in margins.values())
    widest = max(margins, key=lambda c: margins[c].delta)
    ae_helps = sum(diff(grid[ae, c], grid[NOISY, c]).above_zero for c in noisy_cols)
    clean = diff(grid[ae, clean_col], grid[dae, clean_col])
    return [
        f"The denoising AE beats the standard AE on {count(wins, len(noisy_cols))} noisy inputs (interval above 0), "
        f"loses on {losses} and is indistinguishable on {len(noisy_cols) - wins - losses}; the widest margin is on "
        f"{widest} ({db(grid[dae, widest].psnr)} against {db(grid[ae, widest].psnr)}, {margins[widest].render()}).",
        f"The standard AE's output is better than its noisy input on {count(ae_helps, len(noisy_cols))} noisy "
        + ("inputs: the 64-unit bottleneck alone removes some noise." if ae_helps else "inputs: it does not denoise."),
        f"On clean input {versus('the standard AE', 'the denoising AE', clean)} "
        f"({db(grid[ae, clean_col].psnr)} standard, {db(grid[dae, clean_col].psnr)} denoising).",
    ]


def noise_level(grid: ScoreGrid) -> list[str]:
    trained = [sweep_row(s) for s in SIGMAS]

    def short(row: str) -> str:
        return row.replace("trained at σ", "training σ")

    rankings = {col: rank({r: grid[r, col].values() for r in trained}) for col in grid.cols}
    per_col = "; ".join(
        f"at test {col} {rankings[col].sentence(short)} ({db(grid[rankings[col].leader, col].psnr)})"
        for col in grid.cols
    )
    matching = [sweep_row(s) for s in SIGMAS]
    clear = sum(rankings[c].clear and rankings[c].leader == m for c, m in zip(grid.cols, matching, strict=True))
    top_or_tied = sum(
        m == rankings[c].leader or m in rankings[c].tied for c, m in zip(grid.cols, matching, strict=True)
    )
    overall = rank({r: row_values(grid, r) for r in trained})
    low_col = grid.cols[0]
    noisy = grid[NOISY, low_col]
    psnr_worse = [r for r in trained if diff(grid[r, low_col], noisy).below_zero]
    ssim_better = [r for r in trained if diff(grid[r, low_col], noisy, "ssim").above_zero]
    high = trained[-1]
    return [
        f"Per test level: {per_col}. The matching training σ is clearly best in {count(clear, len(SIGMAS))} "
        f"columns and best or tied for best in {count(top_or_tied, len(SIGMAS))}.",
        f"Averaged over all five test levels, {overall.sentence(short)} (mean {db(mean_psnr(grid, overall.leader))}).",
        f"At test {low_col} the noisy input scores {db(noisy.psnr)} (SSIM {ssim(noisy.ssim)}): "
        f"{count(len(psnr_worse), len(trained))} models score below it in PSNR and "
        f"{count(len(ssim_better), len(trained))} above it in SSIM"
        + (", so there the two metrics disagree" if set(psnr_worse) & set(ssim_better) else "")
        + f" (the model trained at σ {SIGMAS[-1]:g}: {db(grid[high, low_col].psnr)}, PSNR "
        f"{diff(grid[high, low_col], noisy).render()}, SSIM {diff(grid[high, low_col], noisy, 'ssim').render('')}).",
    ]


WORST_LISTED = 5


def worse_than_input(grid: ScoreGrid, rows: Sequence[str]) -> str:
    """How many (model, condition) outputs are measurably worse than their own noisy input, the worst named."""
    worse = [(r, c, diff(grid[r, c], grid[NOISY, c])) for r in rows for c in grid.cols]
    worse = sorted(((r, c, iv) for r, c, iv in worse if iv.below_zero), key=lambda w: w[2].delta)
    if not worse:
        return "No model makes any of these inputs measurably worse than they came in."
    listed = "; ".join(f"{r} on {c} ({iv.render()})" for r, c, iv in worse[:WORST_LISTED])
    more = f", the {WORST_LISTED} largest drops" if len(worse) > WORST_LISTED else ""
    pairs = count(len(worse), len(rows) * len(grid.cols))
    return (
        f"Worse than the noisy input it was given, beyond the interval: {pairs} model-condition pairs{more}: {listed}."
    )


def robustness(grid: ScoreGrid, specialists: Mapping[str, str]) -> list[str]:
    """``specialists`` maps a column (noise label) to the row of the MLP trained on that noise."""
    mlp_rows = list(specialists.values())
    rankings = {c: rank({r: grid[r, c].values() for r in mlp_rows}) for c in grid.cols}
    own_clear = sum(rankings[c].leader == row and rankings[c].clear for c, row in specialists.items())
    own_tied = sum(row in rankings[c].tied for c, row in specialists.items())
    drops = {(r, c): grid[specialists[c], c].psnr - grid[r, c].psnr for c in grid.cols for r in mlp_rows}
    worst_row, worst_col = max(drops, key=lambda k: drops[k])
    worst = diff(grid[worst_row, worst_col], grid[specialists[worst_col], worst_col])
    mixed_gap = bootstrap(
        row_values(grid, "mlp-mixed"), mean_over([grid[specialists[c], c].values() for c in grid.cols])
    )
    conv_clear = sum(
        all(diff(grid["conv-blind", c], grid[r, c]).above_zero for r in [*mlp_rows, "mlp-mixed"]) for c in grid.cols
    )
    models = [r for r in grid.rows if r != NOISY]
    return [
        f"The MLP trained on a noise is clearly the best of the three MLP specialists on that noise in "
        f"{count(own_clear, len(grid.cols))} columns, and indistinguishable from the best in {own_tied} more.",
        f"The largest cost of a mismatched noise: {worst_row} on {worst_col} scores "
        f"{db(grid[worst_row, worst_col].psnr)} against {db(grid[specialists[worst_col], worst_col].psnr)} for the "
        f"matching specialist ({worst.render()}).",
        f"Averaged over the three noises, mlp-mixed minus the matching specialist is {mixed_gap.render()}, and the "
        f"blind conv-blind beats every MLP, beyond the interval, on {count(conv_clear, len(grid.cols))} noise types.",
        worse_than_input(grid, models),
    ]


def blind(grid: ScoreGrid, beyond: Sequence[str], specialists: Sequence[str]) -> list[str]:
    models = [r for r in grid.rows if r != NOISY]
    mixed_wins = sum(all(diff(grid["mlp-mixed", c], grid[s, c]).above_zero for s in specialists) for c in grid.cols)
    beyond_best = "; ".join(f"on {c} {rank({r: grid[r, c].values() for r in models}).sentence()}" for c in beyond)
    overall = rank({r: row_values(grid, r) for r in models})
    return [
        f"The one mlp-mixed model beats all three MLP specialists, beyond the interval, on "
        f"{count(mixed_wins, len(grid.cols))} conditions.",
        f"On the levels no specialist was trained on (the blind models were: `mixed` draws up to 0.5): {beyond_best}.",
        f"Averaged over all {len(grid.cols)} conditions, {overall.sentence()} "
        f"(mean {db(mean_psnr(grid, overall.leader))}).",
        worse_than_input(grid, models),
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
        f"{ae.roughness:.2f} standard; white noise ≈ 3.9), but {dae.dead_filters} of the denoising AE's and "
        f"{ae.dead_filters} of the standard AE's {result.first_layer_units} first-layer units never fire on a clean "
        "test image: their weights are still the random initialisation.",
        f"Latent units: {dae.active_units} active with mean |r| {dae.mean_abs_corr:.3f} (denoising) against "
        f"{ae.active_units} active with mean |r| {ae.mean_abs_corr:.3f} (standard).",
    ]


def iterative(result: IterativeResult) -> list[str]:
    sentences = []
    for variant in VARIANTS:
        runs = result.scores[variant]
        k = result.best_pass(variant)
        last = diff(runs[-1], runs[0])
        if k == 1:
            closest = 1 + max(range(1, len(runs)), key=lambda i: runs[i].psnr)
            tail = (
                f"no further pass scores higher (the closest, pass {closest}: "
                f"{diff(runs[closest - 1], runs[0]).render()}); after {len(runs)} passes {db(runs[-1].psnr)}, "
                f"{last.render()} from one pass"
            )
        else:
            gain = diff(runs[k - 1], runs[0])
            helping = "pass 2 helps" if k == 2 else f"passes 2 to {k} help"
            peak = (
                f"{helping}, peaking at {db(runs[k - 1].psnr)} ({gain.render()} over one pass)"
                if gain.above_zero
                else f"its best, pass {k} ({db(runs[k - 1].psnr)}), is indistinguishable from one pass "
                f"(Δ {gain.render()})"
            )
            tail = f"{peak}; after {len(runs)} passes {db(runs[-1].psnr)}, {last.render()} from one pass"
        sentences.append(f"{variant.capitalize()} passes: one pass gives {db(runs[0].psnr)}; {tail}.")
    sentences.append(f"For reference the noisy input scores {db(result.noisy.psnr)}.")
    return sentences


def classical(result: ClassicalResult, specialist_row: str) -> list[str]:
    grid, methods = result.grid, list(METHODS)
    sentences = []
    for col in grid.cols:
        best_classical = rank({m: grid[m, col].values() for m in methods})
        best_model = rank({m: grid[m, col].values() for m in MODEL_ROWS})
        sentences.append(
            f"On {col}, among the classical denoisers {best_classical.sentence()} "
            f"({db(grid[best_classical.leader, col].psnr)}); among the models "
            f"{best_model.sentence(lambda r: r.split(' (')[0])} ({db(grid[best_model.leader, col].psnr)})."
        )
    gaussian_col = grid.cols[0]
    mlp, bm3d = grid[specialist_row, gaussian_col], grid["BM3D", gaussian_col]
    effective = grid[EFFECTIVE_BM3D, gaussian_col]
    sentences.append(
        f"On {gaussian_col}, where BM3D is given the true σ, {versus('the matching MLP', 'BM3D', diff(mlp, bm3d))} "
        f"({db(mlp.psnr)} against {db(bm3d.psnr)}); given the effective σ of the clipped noise instead, BM3D "
        f"scores {db(effective.psnr)}, and {versus('the matching MLP', 'BM3D', diff(mlp, effective))}."
    )
    return sentences


def fashion(grid: ScoreGrid, short: Mapping[str, str], mnist: ScoreGrid, conv: str) -> list[str]:
    sentences = headline(grid, short)
    gaussian = grid.rows[0]
    on_fashion, on_mnist = grid[gaussian, conv], mnist[gaussian, "conv-blind"]
    change = diff(on_fashion, on_mnist, paired=False)  # different images: two independent samples
    sentences.append(
        f"conv-blind, trained on MNIST, scores {db(on_fashion.psnr)} on Fashion-MNIST {gaussian} against "
        f"{db(on_mnist.psnr)} on MNIST (section 1): {change.render()} on the unfamiliar data set "
        "(an unpaired interval: different images)."
    )
    return sentences
