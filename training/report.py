"""``dae-report``: re-run the study and write ``docs/report.md`` with its figures.

The run prepares every model first, every training seed of it (shipped checkpoints, or trained once into
the cache), then runs the experiments in the order of ``SECTIONS``, from the examples to the cost table,
each adding one section: tables, figures and findings computed from its numbers. ``--quick`` runs the same
code on the test fixture with tiny models. ``--only KEY ...`` re-runs just those sections (after one model
changed, say) and puts them in place in the existing report, with a note saying so; it prepares only the
models those sections ask for, when they ask.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from training.data import load_split
from training.study import sections
from training.study.blindness import blindness_section
from training.study.config import StudyConfig
from training.study.cost import cost_section
from training.study.domains import PHOTO_MODEL, domains_section, photo_section
from training.study.log import ProgressLog
from training.study.markdown import Section, Table, render_report, seeds_note
from training.study.scoring import Scorer, TestSet
from training.study.universal import universal_section
from training.study.zoo import SPECS, ModelZoo, seeded
from training.train import device_name, torch_threads

SECTIONS: tuple[tuple[str, Callable[[sections.Study], Section]], ...] = (  # (anchor key, builder), in order
    ("examples", sections.examples),
    ("dae-vs-ae", sections.dae_vs_ae),
    ("noise-level", sections.noise_level),
    ("robustness", sections.robustness),
    ("features", sections.feature_section),
    ("iterative", sections.iterative_section),
    ("blind", sections.blind),
    ("blindness", blindness_section),
    ("unseen", universal_section),
    ("classical", sections.classical_section),
    ("fashion", sections.fashion),
    ("domains", domains_section),
    ("photos", photo_section),
    ("cost", cost_section),
)
SECTION_KEYS: tuple[str, ...] = tuple(key for key, _ in SECTIONS)


def duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"


def load_test(dataset: str, cfg: StudyConfig) -> TestSet:
    images, labels = load_split(dataset, "test", cfg.data_root)
    return TestSet(dataset, images, labels).head(cfg.scale.test_limit)


def models_table(zoo: ModelZoo) -> Table:
    """One row per model, its seeds together: where each came from, best epochs, training times."""
    rows = []
    for spec in SPECS:
        provs = [zoo.provenance[seeded(spec.name, seed)] for seed in zoo.cfg.seeds]
        card = provs[0].card
        noise = card.noise if card.noise == "none" else f"{card.noise} {card.noise_level:g}"
        sources = ", ".join(f"{p.seed}: {p.source}" for p in provs)
        epochs = ", ".join(str(p.card.best_epoch) for p in provs)
        minutes = ", ".join(f"{p.card.training.get('wall_time_s', float('nan')) / 60:.1f}" for p in provs)
        rows.append([
            spec.name, sources, card.dataset, card.architecture, noise, f"{epochs} of {card.epochs}",
            f"{card.training.get('train_images', '?'):,}", f"{minutes} ({card.training.get('device', '?')})",
            f"`{card.training.get('command', '?')}`",
        ])  # fmt: skip
    header = ["model", "seed: source", "data set", "arch", "training noise", "best epoch per seed", "train images",
              "training minutes per seed (device of seed 0)", "training command (seed 0)"]  # fmt: skip
    note = (
        "Training commands as recorded in each model card; the other seeds' differ only in `--seed` and `--out` "
        f"(`{zoo.cfg.model_cache}/NAME@sSEED`); the cache models were trained by this report, or an earlier run of it."
    )
    return Table(header, rows, note, "Models")


def machine() -> str:
    """The hardware and software the numbers were measured on: CPU model, cores, GPU, library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {os.cpu_count()} logical cores{gpu}; {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}, torch {torch.__version__} ({torch_threads()})"
    )


def provenance(cfg: StudyConfig, zoo: ModelZoo) -> str:
    """What a run's header says of it: the command, when, the device and the machine."""
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"`{cfg.command}` on {when}, device {device_name(zoo.device)}; machine: {machine()}"


def preamble(cfg: StudyConfig, zoo: ModelZoo, total: float, training: float) -> list[str]:
    lines = [
        "# Denoising autoencoders: the study",
        f"Generated by {provenance(cfg, zoo)}. "
        f"**The whole run took {duration(total)}** ({duration(training)} of it preparing models).",
    ]
    if cfg.quick:
        lines.append(
            "> **Quick run**: tiny models trained for seconds on a few images of the given data. The numbers only "
            "show that the pipeline works; they say nothing about denoising autoencoders."
        )
    lines.append(
        "How to read it:\n\n"
        "- Every number is measured on test images the models never saw in training or tuning; each table says "
        "which images (the whole test split, or a fixed sample of it).\n"
        f"- Noise is drawn from fixed seeds ({seeds_note(cfg.eval_seeds, len(cfg.seeds))}), the first exactly as "
        "`dae-eval` draws it, so every model in a table denoises the very same noisy images. Each model is "
        "trained with every training seed (seed 0 of a shipped model is the shipped checkpoint), and training seed "
        "k is scored on the k-th noise draw (seed 0 on `dae-eval`'s, so its numbers are the cards'); a cell is the "
        "mean over images and training seeds, with ± the spread across training seeds.\n"
        "- Every difference a finding draws a conclusion from carries a 95% paired-bootstrap interval "
        "(`+1.20 dB [+0.98, +1.41]`), resampled over the test images and the training seeds. A method is called "
        "best, or said to beat another, only when that interval excludes 0; otherwise the two are "
        "*indistinguishable*.\n"
        "- PSNR is computed per image (data range 1) and averaged; SSIM likewise (Gaussian window 11, σ 1.5). "
        "Higher is better for both; identical images score the PSNR cap of 100 dB. The *noisy input* row is the "
        "corrupted image itself: what a denoiser must beat.\n"
        "- Findings under each table are generated from its numbers; signed values (+1.20 dB) are differences."
    )
    lines.append(models_table(zoo).render())
    return lines


def epilogue(timings: list[tuple[str, float]], total: float) -> list[str]:
    rows = [[step, f"{seconds:.1f}"] for step, seconds in timings] + [["**total**", f"{total:.1f}"]]
    return ["## Run time", Table(["step", "seconds"], rows, "Wall-clock time of each step of this run.").render()]


def rerun_note(cfg: StudyConfig, zoo: ModelZoo, numbers: list[int], total: float) -> str:
    listed = ", ".join(str(n) for n in numbers)
    return (
        f"**Re-run:** section{'s' if len(numbers) > 1 else ''} {listed} by {provenance(cfg, zoo)}; it took "
        f"{duration(total)}. The other sections, and the run-time table, are from the run above."
    )


def splice_sections(report: str, fresh: list[tuple[int, Section]], note: str) -> str:
    """``--only``: the report with the re-run sections put in place of their old text and ``note`` under the
    preamble (after any earlier re-run notes), every other section kept byte for byte."""
    parts = report.rstrip("\n").split("\n\n## ")  # render_report joins blocks with a blank line
    for number, section in fresh:
        anchor = f'<a id="{section.key}"></a>'
        matches = [i for i, part in enumerate(parts) if anchor in part.split("\n\n", 2)[1:2]]
        if len(matches) != 1:
            raise RuntimeError(f"the report has no section {section.key!r} to replace: run dae-report without --only")
        parts[matches[0]] = section.render(number).removeprefix("## ")
    blocks = parts[0].split("\n\n")
    notes = [i for i, block in enumerate(blocks) if block.startswith(("Generated by", "**Re-run:**"))]
    last_note = notes[-1] if notes else 0
    parts[0] = "\n\n".join([*blocks[: last_note + 1], note, *blocks[last_note + 1 :]])
    return "\n\n## ".join(parts) + "\n"


def build_study(cfg: StudyConfig, zoo: ModelZoo, log: ProgressLog) -> sections.Study:
    log("loading the test splits and the MNIST train split")
    train_images, train_labels = load_split("mnist", "train", cfg.data_root)
    limit = cfg.scale.probe_train_limit
    mnist, fashion = load_test("mnist", cfg), load_test("fashion-mnist", cfg)
    scorer = Scorer(zoo.model, zoo.names, cfg.eval_seeds)
    return sections.Study(cfg, scorer, mnist, fashion, train_images[:limit], train_labels[:limit], log, zoo.card)


def run_report(cfg: StudyConfig) -> Path:
    """Run the whole study and write the report; returns its path (``--train-only`` is ``train_into_cache``'s)."""
    unknown = sorted(set(cfg.only) - set(SECTION_KEYS))
    if unknown:  # before any model is prepared
        raise RuntimeError(f"--only: no section {', '.join(unknown)}; the sections are {', '.join(SECTION_KEYS)}")
    log = ProgressLog()
    log(f"dae-report: {'quick' if cfg.quick else 'full'} run on {cfg.data_root}, report {cfg.out}")
    zoo = ModelZoo(cfg, log)
    if cfg.only:
        zoo.prepare_on_demand()  # a re-run trains only what its sections use
    else:
        zoo.prepare()  # a missing checkpoint fails before hours of work
    zoo.adopt_shipped(PHOTO_MODEL)  # for the out-of-domain section, when shipped
    timings = [("prepare models (train what is missing)", log.elapsed())]
    study = build_study(cfg, zoo, log)
    chosen = [(n, build) for n, (key, build) in enumerate(SECTIONS, start=1) if not cfg.only or key in cfg.only]
    done: list[tuple[int, Section]] = []
    for number, build in chosen:
        started = time.perf_counter()
        log(f"section {number}/{len(SECTIONS)}: {build.__name__}")
        section = build(study)
        if section.key != SECTION_KEYS[number - 1]:
            raise RuntimeError(f"section {number} is {section.key!r}, SECTIONS says {SECTION_KEYS[number - 1]!r}")
        section.seconds = time.perf_counter() - started
        timings.append((f"{number}. {section.title}", section.seconds))
        done.append((number, section))
    total = log.elapsed()
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    if cfg.only:
        note = rerun_note(cfg, zoo, [number for number, _ in done], total)
        cfg.out.write_text(splice_sections(cfg.out.read_text(), done, note))
    else:
        body = preamble(cfg, zoo, total, timings[0][1])
        cfg.out.write_text(render_report(body, [section for _, section in done], epilogue(timings, total)))
    log(f"wrote {cfg.out} and {len(list(cfg.figures_dir.glob('*.png')))} figures in {cfg.figures_dir}")
    return cfg.out
