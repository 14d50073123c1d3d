"""What each method costs: parameters, training time, latency at batch 1 and throughput at batch 64.

(A ``--quick`` run times a batch of 8: BM3D alone would take minutes of a smoke test at 64.)

Every method is timed the same way, in this one process on this machine (no worker pool, BM3D included), on
Gaussian σ 0.3 test images: the median of several calls after a warm-up call. The networks run under
``torch.inference_mode`` on the study's device; the classical methods on the CPU (median and blur filter a
batch in one call, the others go image by image). Training times are those recorded in each model's card,
with its device.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from models.checkpoint import ModelCard
from training.study import classical
from training.study.experiments import NOISY
from training.study.markdown import CELL_NOTE, Section, Table, caption, cell
from training.study.scoring import GAUSSIAN, LevelTold, Score, needs_level
from training.study.sections import Study
from training.study.zoo import SPECS
from training.train import device_name

CLASSICAL_REPEATS = 3  # BM3D takes seconds per batch of 64; a few calls give a stable median


@dataclass
class Cost:
    method: str
    parameters: str
    training: str
    latency_ms: float  # one image, batch 1
    throughput: float  # images per second at the timing batch (64 in a full run)
    quality: Score  # on the timed batch


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first-call allocations and lazy imports are not the method's cost
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def training_time(card: ModelCard) -> str:
    seconds = card.training.get("wall_time_s")
    if seconds is None:
        return "—"
    return f"{seconds / 60:.1f} min on {card.training.get('device', '?')}"


def model_cost(study: Study, name: str, noisy: torch.Tensor, clean: torch.Tensor, repeats: int) -> Cost:
    model = study.scorer.model_of(name).eval()
    if needs_level(model):
        model = LevelTold(model, float(GAUSSIAN.steps[0][1]))
    device = next(model.parameters()).device
    one, batch = noisy[:1].to(device), noisy.to(device)

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the kernels, not just their launch
        return out

    card = study.card_of(name)
    return Cost(
        name, f"{card.parameters:,}", training_time(card),
        1000 * median_seconds(lambda: run(one), repeats), len(batch) / median_seconds(lambda: run(batch), repeats),
        Score.of(run(batch).float().cpu(), clean),
    )  # fmt: skip


def classical_cost(method: str, noisy: torch.Tensor, clean: torch.Tensor, repeats: int) -> Cost:
    # The untuned first setting of each grid: run time hardly depends on the setting, and quality is the
    # classical section's business (tuned on train images there).
    sigma = float(GAUSSIAN.steps[0][1])
    params = classical.GRIDS[method][0]

    def run(x: torch.Tensor) -> torch.Tensor:
        return classical.run(method, x, sigma, 1, params)

    latency = median_seconds(lambda: run(noisy[:1]), repeats)
    return Cost(method, "—", "none", 1000 * latency, len(noisy) / median_seconds(lambda: run(noisy), repeats),
                Score.of(run(noisy), clean))  # fmt: skip


def cost_section(study: Study) -> Section:
    batch = study.cfg.scale.timing_batch
    timed = study.mnist.head(batch)
    noisy, clean = timed.noisy(GAUSSIAN), timed.clean
    repeats = study.cfg.scale.timing_repeats
    classical_repeats = min(CLASSICAL_REPEATS, repeats)  # a smoke run's few calls, BM3D's included
    rows = []
    for spec in SPECS:
        if spec.dataset == "mnist":
            study.log(f"cost: timing {spec.name}")
            rows.append(model_cost(study, spec.name, noisy, clean, repeats))
    for method in classical.METHODS:
        if method == classical.EFFECTIVE_BM3D:  # BM3D itself, given another σ: the same cost
            continue
        study.log(f"cost: timing {method}")
        rows.append(classical_cost(method, noisy, clean, classical_repeats))
    device = next(study.scorer.model_of(SPECS[0].name).parameters()).device
    what = (
        f"{CELL_NOTE.split(',')[0]} (seed 0 of each model; classical methods untuned); networks on "
        f"{device_name(device)}, classical methods on the CPU, all in this one process; times: the median of "
        f"{repeats} calls (classical: {classical_repeats}) after a warm-up; training time as each card records it"
    )
    header = ["method", "parameters", "training time (card)", "latency, batch 1 (ms)",
              f"throughput, batch {batch} (images/s)", "Gaussian σ 0.3: PSNR / SSIM"]  # fmt: skip
    noisy_row = [NOISY, "—", "—", "—", "—", cell(Score.of(noisy, clean))]
    table = Table(
        header,
        [noisy_row]
        + [
            [c.method, c.parameters, c.training, f"{c.latency_ms:.2f}", f"{c.throughput:,.0f}", cell(c.quality)]
            for c in rows
        ],
        caption(timed, study.cfg.command, what, study.cfg.eval_seeds[:1]),
    )
    fastest = min(rows, key=lambda c: c.latency_ms)
    slowest = max(rows, key=lambda c: c.latency_ms)
    return Section(
        "cost",
        "Cost",
        "What does each method cost to train and to run, measured the same way on the same machine?",
        [table],
        [],
        [
            f"The fastest method at batch 1 is {fastest.method} ({fastest.latency_ms:.2f} ms per image), the slowest "
            f"{slowest.method} ({slowest.latency_ms:.2f} ms), {slowest.latency_ms / fastest.latency_ms:,.0f}× slower.",
        ],
    )
