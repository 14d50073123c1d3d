"""``dae-train`` sized to a wall-clock budget, for a lent device: a run cut off by its time limit ships nothing.

A calibration run first (the same options, 2 epochs of ``--calibration-steps`` steps, on the same device,
written to a scratch folder) measures what a training step costs, from its second epoch (the first pays for
start-up and cuDNN's autotuning), and what a run costs around its steps (start-up, validation, writing).
The real run then gets as many steps as fit in what is left of the budget, less a safety share, split evenly
over its ``--epochs``: a plain ``dae-train`` command with ``--steps-per-epoch``, which its card records, so it
reproduces anywhere without a budget. The real run's exit status is this command's.

    python -m bench.budgeted_train --budget-s 380 -- --dataset train400 --data-root DATA ... --epochs 30 --out OUT
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import train_command
from training.cli import train_config

REPO = Path(__file__).resolve().parents[1]
CALIBRATION_EPOCHS = 2


@dataclass(frozen=True)
class StepCost:
    """What the calibration run measured, in seconds."""

    per_step: float  # one training step, in the second epoch
    per_epoch: float  # an epoch's work besides its steps (validation, the resume state)
    fixed: float  # the rest of a run: process start-up, loading, writing the checkpoint


def run_training(args: list[str]) -> tuple[int, float]:
    """``python -m training train ARGS`` in the repository, its output passed through: exit status, seconds."""
    started = time.perf_counter()
    status = subprocess.run(train_command(args), cwd=REPO).returncode
    return status, time.perf_counter() - started


def calibrate(args: list[str], steps: int) -> StepCost:
    """Run ``args`` for two short epochs into a scratch folder and read the costs off its card."""
    with tempfile.TemporaryDirectory(prefix="dae-calibration-") as scratch:
        out = Path(scratch) / "calibration"
        overrides = ["--epochs", str(CALIBRATION_EPOCHS), "--steps-per-epoch", str(steps), "--out", str(out)]
        status, seconds = run_training([*args, *overrides])  # argparse keeps an option's last value
        if status != 0:
            raise SystemExit(f"the calibration run failed (exit {status}); its output is above")
        training = json.loads(out.with_suffix(".json").read_text())["training"]
    history = training["history"]
    per_step = history[-1]["train_s"] / steps
    loop = training["wall_time_s"]  # from the first epoch's start to the last one's end
    per_epoch = max(0.0, (loop - sum(h["train_s"] for h in history)) / CALIBRATION_EPOCHS)
    return StepCost(per_step, per_epoch, max(0.0, seconds - loop))


def steps_per_epoch(cost: StepCost, epochs: int, seconds: float, safety: float) -> int:
    """The most steps per epoch for which ``epochs`` epochs fit in ``seconds`` less a ``safety`` share of them."""
    room = seconds * (1.0 - safety) - cost.fixed - epochs * cost.per_epoch
    return math.floor(room / (epochs * cost.per_step))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-s", type=float, required=True, help="seconds for calibration and training together")
    p.add_argument("--calibration-steps", type=int, default=40, help="steps in each of the calibration's epochs")
    p.add_argument("--safety", type=float, default=0.1, help="share of the remaining time left unplanned")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then dae-train's options, with --epochs and --out")
    args = p.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if "--steps-per-epoch" in train_args or "--resume" in train_args:
        p.error("the budget sets --steps-per-epoch, and a budgeted run starts afresh (no --resume)")
    cfg = train_config(train_args)  # dae-train's own checks, before any time is spent
    started = time.perf_counter()
    cost = calibrate(train_args, args.calibration_steps)
    left = args.budget_s - (time.perf_counter() - started)
    steps = steps_per_epoch(cost, cfg.epochs, left, args.safety)
    print(
        f"calibration: {cost.per_step * 1000:.1f} ms a step of {cfg.batch_size}, {cost.per_epoch:.1f} s an epoch "
        f"besides, {cost.fixed:.1f} s a run besides; {left:.0f} s left: {cfg.epochs} epochs of {steps} steps",
        flush=True,
    )
    if steps < 1:
        print(f"the budget is too small: {left:.0f} s left after calibrating does not fit {cfg.epochs} epochs")
        return 2
    return run_training([*train_args, "--steps-per-epoch", str(steps)])[0]


if __name__ == "__main__":
    sys.exit(main())
