"""One report section per experiment: run it, draw its figures, tabulate it, state its findings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from models.checkpoint import ModelCard
from models.metrics import psnr_per_image
from training.evaluate import to_float_batch
from training.study import classical, experiments, features, figures, findings, iterative, probe
from training.study.config import StudyConfig
from training.study.experiments import NOISY, SPECIALISTS, ScoreGrid
from training.study.log import LogFn
from training.study.markdown import CELL_NOTE, Figure, Section, Table, caption, cell, ms, pct, psnr, ssim
from training.study.scoring import CLEAN, REFERENCE_NOISES, Scorer, TestSet


@dataclass
class Study:
    """What every section needs: the settings, the scorer, the test sets and the MNIST train images."""

    cfg: StudyConfig
    scorer: Scorer
    mnist: TestSet
    fashion: TestSet
    train_images: torch.Tensor
    train_labels: torch.Tensor
    log: LogFn
    card_of: Callable[[str], ModelCard]
    classical_runs: classical.ClassicalRuns = field(default_factory=dict)  # shared by two sections

    def figure(self, name: str) -> Path:
        return self.cfg.figures_dir / name

    def caption(self, test: TestSet, what: str = CELL_NOTE) -> str:
        return caption(test, self.cfg.command, what, self.cfg.eval_seeds, len(self.cfg.seeds))

    def tuning_images(self) -> torch.Tensor:
        """Clean MNIST train images on which classical denoisers are tuned (never the test split)."""
        return to_float_batch(self.train_images[: self.cfg.scale.tuning_images])

    @property
    def digits(self) -> int:
        return self.cfg.scale.figure_digits


def grid_table(
    grid: ScoreGrid, header: str, note: str, extra: Mapping[str, Callable[[str], str]] | None = None
) -> Table:
    """A score grid as a table: a row label column, one cell per column, then any computed columns."""
    extra = extra or {}
    rows = [
        [row, *(cell(grid[row, col]) for col in grid.cols), *(fn(row) for fn in extra.values())] for row in grid.rows
    ]
    return Table([header, *grid.cols, *extra], rows, note)


def mean_column(grid: ScoreGrid) -> dict[str, Callable[[str], str]]:
    return {"mean PSNR (dB) / SSIM": lambda row: f"{psnr(findings.mean_psnr(grid, row))} / "
            f"{ssim(float(grid.ssim([row]).mean()))}"}  # fmt: skip


def heat(study: Study, name: str, title: str, grid: ScoreGrid, axis_labels: tuple[str, str]) -> Figure:
    # The noisy input is a row like the others: a model below it is visibly worse than doing nothing.
    figures.heatmap(study.figure(name), title, grid.psnr(), (grid.rows, grid.cols), axis_labels, second=grid.ssim())
    return Figure(name, f"{title}: mean PSNR (dB, colour and upper number) and SSIM (lower number), noisy input "
                        "included.")  # fmt: skip


def examples(study: Study) -> Section:
    test, digits = study.mnist, study.digits
    grid = experiments.mnist_headline(study.scorer, test)
    figs, panels = [], []
    for noise in REFERENCE_NOISES:
        model = SPECIALISTS[noise.kind]
        noisy = test.noisy(noise)[:digits]
        denoised = study.scorer.denoise(model, noisy)
        blind = study.scorer.denoise("conv-blind", noisy)
        name = f"grid_{noise.kind}.png"
        rows = [("clean", test.clean[:digits]), ("noisy", noisy), (f"denoised\n({model})", denoised),
                ("denoised\n(conv-blind)", blind)]  # fmt: skip
        figures.image_grid(study.figure(name), f"{noise.label}: clean → noisy → denoised by {model} and conv-blind",
                           rows)  # fmt: skip
        figs.append(Figure(name, f"{noise.label}: clean, noisy, and denoised by {model} and by conv-blind (seed 0 "
                                 "of each, first noise seed)."))  # fmt: skip
        panels.append((noise.label, test.clean[:1], noisy[:1], denoised[:1]))
    figures.error_maps(study.figure("noise_comparison.png"), "Noise types and what the MLP specialists leave", panels)
    figs.append(Figure("noise_comparison.png", "One digit under each noise, denoised, with absolute-error maps."))
    short = {"MLP specialist (trained on that noise)": "the matching MLP specialist",
             "U-Net specialist (trained on that noise)": "the matching U-Net specialist",
             "conv-blind": "conv-blind"}  # fmt: skip
    return Section(
        "examples",
        "Clean → noisy → denoised, per noise type (headline)",
        "How much does each denoiser recover under the three reference noises?",
        [grid_table(grid, "test noise", study.caption(test))],
        figs,
        findings.headline(grid, short),
    )


def dae_vs_ae(study: Study) -> Section:
    grid = experiments.dae_vs_ae(study.scorer, study.mnist)
    ae, dae = list(experiments.DAE_VS_AE_ROWS)[1:]
    # The noisy input *is* the clean image in the clean column (PSNR capped at 100 dB): left out of the plot.
    series = {row: [float("nan") if (row, c) == (NOISY, grid.cols[0]) else grid[row, c].psnr for c in grid.cols]
              for row in grid.rows}  # fmt: skip
    title = "Denoising vs standard autoencoder on the same inputs"
    figures.grouped_bars(study.figure("dae_vs_ae.png"), title, grid.cols, series, "mean PSNR (dB)")
    return Section(
        "dae-vs-ae",
        "Denoising vs standard autoencoder",
        "Does training on corrupted inputs matter, or does any autoencoder denoise? Both MLPs share one architecture.",
        [grid_table(grid, "model", study.caption(study.mnist))],
        [Figure("dae_vs_ae.png", f"{title}: mean PSNR per test input.")],
        findings.dae_vs_ae(grid, ae, dae, experiments.CLEAN.label),
    )


def noise_level(study: Study) -> Section:
    grid = experiments.noise_level(study.scorer, study.mnist)
    fig = heat(study, "noise_level.png", "MLP trained at σ (rows) tested at σ (columns)", grid,
               ("training noise", "test noise"))  # fmt: skip
    return Section(
        "noise-level",
        "Noise level: train σ × test σ",
        "Is there a best training level, and does a model trained on heavy noise clean light noise?",
        [grid_table(grid, "model", study.caption(study.mnist), mean_column(grid))],
        [fig],
        findings.noise_level(grid),
    )


def robustness(study: Study) -> Section:
    grid = experiments.robustness(study.scorer, study.mnist)
    fig = heat(study, "robustness.png", "Training noise (rows) × test noise (columns)", grid,
               ("model (training noise)", "test noise"))  # fmt: skip
    specialists = {noise.label: SPECIALISTS[noise.kind] for noise in REFERENCE_NOISES}
    return Section(
        "robustness",
        "Noise-type robustness",
        "How does each specialist fare on the noises it was not trained on, and what do blind models give up?",
        [grid_table(grid, "model", study.caption(study.mnist))],
        [fig],
        findings.robustness(grid, specialists),
    )


def feature_section(study: Study) -> Section:
    result = features.feature_study(study.scorer, study.mnist, study.train_images, study.train_labels)
    noise = features.PROBE_NOISE.label
    rows = [
        [r.label, pct(r.probe_clean), pct(r.probe_noisy), str(r.active_units), f"{r.mean_abs_corr:.3f}",
         f"{r.roughness:.2f}", cell(r.clean), cell(r.noisy)]
        for r in result.rows
    ]  # fmt: skip
    scorer, test = study.scorer, study.mnist
    rows.append([NOISY, "—", "—", "—", "—", "—", cell(scorer.score(None, test, CLEAN)),
                 cell(scorer.score(None, test, features.PROBE_NOISE))])  # fmt: skip
    header = ["model", "probe accuracy, clean test", f"probe accuracy, {noise} test", "active latent units",
              "mean abs. corr. between units", "filter roughness", "clean input", f"{noise} input"]  # fmt: skip
    what = (
        f"probe: logistic regression on the standardised 64-d code of {result.probe_train_images:,} clean MNIST "
        "train images, accuracy on the test images; roughness: mean ‖∇w‖² of unit-norm first-layer filters "
        f"(white noise ≈ 3.9); last two columns: {CELL_NOTE}"
    )
    dead = {r.label: r.dead_shown for r in result.rows}
    figures.filter_grids(study.figure("filters.png"), "First-layer filters", result.filters, dead)
    dead_note = "; ".join(
        f"{r.label.split(' (')[0]}: {r.dead_shown} of the {len(result.filters[r.label])} shown "
        f"({r.dead_filters} of all {result.first_layer_units})"
        for r in result.rows
    )
    figures.correlation_maps(
        study.figure("latent_correlation.png"), "Correlation between latent units", result.correlations
    )
    scale = study.cfg.scale
    regimes = probe.probe_regimes(study.scorer, study.mnist, study.train_images, study.train_labels,
                                  scale.probe_labels_per_class, scale.probe_draws)  # fmt: skip
    regimes_what = (
        f"test accuracy of the probe fitted on k labelled clean train images per class ({regimes.draws} draws of "
        f"the labels, averaged) or on all {regimes.train_images:,}; ± the spread over training seeds"
    )
    return Section(
        "features",
        "Features: filters, linear probe, latent correlation",
        "What does denoising training change in what the network learns, and does it help a classifier with few "
        "labels?",
        [
            Table(header, rows, study.caption(study.mnist, what)),
            probe.probe_table(regimes, study.caption(study.mnist, regimes_what)),
        ],
        [
            Figure(
                "filters.png",
                "First-layer filters (the 784→256 layer's weights as 28×28 images). Dead units, which fire on no "
                f"clean test image and so keep their random initial weights (the speckled tiles): {dead_note}.",
            ),
            Figure(
                "latent_correlation.png",
                "Correlation between the 64 latent units on clean test images (blank: dead units).",
            ),
        ],
        findings.features(result, noise) + probe.probe_findings(regimes),
    )


def iterative_section(study: Study) -> Section:
    result = iterative.iterative_study(study.scorer, study.mnist, study.digits)
    variants = list(iterative.VARIANTS)
    rows = [["0 (noisy input)", *(cell(result.noisy) for _ in variants)]]
    rows += [[str(k + 1), *(cell(result.scores[v][k]) for v in variants)] for k in range(iterative.PASSES)]
    header = ["passes k", *(f"{v}: {iterative.VARIANTS[v]}" for v in variants)]
    passes = list(range(1, iterative.PASSES + 1))
    panels: list[figures.Panel] = [
        ("mean PSNR (dB)", {v: [s.psnr for s in result.scores[v]] for v in variants}, result.noisy.psnr),
        ("mean SSIM", {v: [s.ssim for s in result.scores[v]] for v in variants}, result.noisy.ssim),
    ]
    title = f"{result.model} applied k times to {result.noise.label} input"
    figures.line_panels(study.figure("iterative.png"), title, passes, "passes k", panels)
    shown = [
        ("clean", study.mnist.clean[: study.digits]),
        ("noisy input", study.mnist.noisy(result.noise)[: study.digits]),
    ]
    # One pass is the same in both variants (noise is only added before later passes), so it is shown once.
    shown += [(f"{v}, k={k}", result.examples[v][k]) for v in variants for k in (1, 3, 10) if k > 1 or v == "plain"]
    figures.image_grid(study.figure("iterative_examples.png"), title, shown)
    return Section(
        "iterative",
        "Iterative denoising",
        f"Feed {result.model}'s output back in, k = 1…{iterative.PASSES} times, on heavily corrupted input "
        f"({result.noise.label}). How many passes help?",
        [Table(header, rows, study.caption(study.mnist))],
        [
            Figure("iterative.png", f"{title}: PSNR and SSIM against the number of passes."),
            Figure("iterative_examples.png", "The same digits, clean, noisy, and after 1, 3 and 10 passes."),
        ],
        findings.iterative(result),
    )


def blind(study: Study) -> Section:
    grid = experiments.blind(study.scorer, study.mnist)
    fig = heat(study, "blind.png", "Blind (mixed) models vs specialists", grid, ("model", "test noise"))
    beyond = [n.label for n in experiments.BEYOND_SPECIALISTS]
    return Section(
        "blind",
        "Blind denoising",
        "One model trained on `mixed` noise against the specialists, on every noise and on levels no specialist "
        f"was trained on ({', '.join(beyond)}), though the blind models were: `mixed` draws levels up to 0.5. "
        "Noise no model was trained on is section [Unseen noise](#unseen)'s.",
        [grid_table(grid, "model", study.caption(study.mnist), mean_column(grid))],
        [fig],
        findings.blind(grid, beyond, list(SPECIALISTS.values())),
    )


def classical_section(study: Study) -> Section:
    sample = study.mnist.sample(study.cfg.scale.classical_sample)
    result = classical.classical_study(
        study.scorer, sample, study.tuning_images(), study.cfg.workers, study.log, runs=study.classical_runs
    )
    time_col = {"time per image": lambda row: "—" if row == NOISY else ms(result.seconds_per_image[row])}
    processes = classical.bm3d_processes(len(sample), study.cfg.workers)
    timing = f"time: wall clock per image on this machine (BM3D in {processes} process{'es' if processes > 1 else ''})"
    # BM3D dominates the run time, so this table takes the first noise seed and each model's seed 0 only.
    what = f"{CELL_NOTE}; models: seed 0 only; {timing}"
    note = caption(sample, study.cfg.command, what, study.cfg.eval_seeds[:1])
    scores = grid_table(result.grid, "denoiser", note, time_col)
    tuned_rows = [[m, *(result.tuned[m, col].describe() for col in result.grid.cols)] for m in classical.METHODS]
    tuned_note = (
        f"Chosen by mean PSNR on {result.tuning_images} noisy MNIST train images (noise seed "
        f"{classical.TUNING_SEED}); the test images were never used. Command: `{study.cfg.command}`."
    )
    tuned = Table(["method", *result.grid.cols], tuned_rows, tuned_note, "Parameters chosen on train images")
    classical_figure(study.figure("classical.png"), result, sample)
    specialist = classical.MODEL_ROWS[0]
    return Section(
        "classical",
        "Classical denoisers",
        "How do the autoencoders compare with a median filter, Gaussian blur, total variation, non-local means and "
        "BM3D on the same noisy test images?",
        [scores, tuned],
        [Figure("classical.png", "One test digit under each noise (rows) and each denoiser (columns), with its PSNR.")],
        findings.classical(result, specialist),
    )


SHORT_ROWS = {NOISY: "noisy", "median": "median", "Gaussian blur": "blur", "total variation": "TV",
              "non-local means": "NLM", classical.MODEL_ROWS[0]: "MLP specialist"}  # fmt: skip


def classical_figure(path: Path, result: classical.ClassicalResult, sample: TestSet) -> None:
    """The first sample digit: one row per noise, the denoisers across, each image with its own PSNR."""
    clean, methods = sample.clean[:1], result.grid.rows
    shown, notes = [], []
    for noise, outputs in result.examples.items():
        shown.append((noise, torch.cat([clean, *(outputs[m] for m in methods)])))
        notes.append(["", *(f"{float(psnr_per_image(outputs[m], clean)[0]):.1f} dB" for m in methods)])
    header = ["clean", *(SHORT_ROWS.get(m, m) for m in methods)]
    figures.image_grid(path, "Classical denoisers and the models on one test digit (PSNR under each)", shown,
                       header, notes)  # fmt: skip


def fashion(study: Study) -> Section:
    test, digits = study.fashion, study.digits
    grid = experiments.fashion_headline(study.scorer, test)
    mnist_headline = experiments.mnist_headline(study.scorer, study.mnist)  # already scored: only looked up
    shown = [("clean", test.clean[:digits])]
    for noise in REFERENCE_NOISES:
        noisy = test.noisy(noise)[:digits]
        shown += [(f"{noise.label}", noisy), ("denoised", study.scorer.denoise("conv-blind-fashion", noisy))]
    title = "Fashion-MNIST: clean, then noisy and denoised by conv-blind-fashion"
    figures.image_grid(study.figure("fashion.png"), title, shown)
    short = {c: c.split(" (")[0] for c in grid.cols}
    conv = list(grid.cols)[-1]
    return Section(
        "fashion",
        "Fashion-MNIST headline",
        "The same headline table on Fashion-MNIST: a blind U-Net and a Gaussian MLP trained there, and the MNIST "
        "blind model for comparison.",
        [grid_table(grid, "test noise", study.caption(test))],
        [Figure("fashion.png", title + ".")],
        findings.fashion(grid, short, mnist_headline, conv),
    )
