"""``bench.budgeted_train``: dae-train sized to a wall-clock budget, on the committed photo crops."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from bench.budgeted_train import StepCost, main, steps_per_epoch
from tests.conftest import FIXTURE_ROOT

PHOTO_RUN = ["--dataset", "train400", "--data-root", str(FIXTURE_ROOT), "--arch", "unet-res", "--arch-arg",
             "channels=4", "--noise", "mixed_photo", "--patch-size", "16", "--batch-size", "4",
             "--val-images", "2", "--epochs", "2"]  # fmt: skip


def budgeted(budget_s: int, calibration_steps: int, out: Path) -> int:
    return main(["--budget-s", str(budget_s), "--calibration-steps", str(calibration_steps), "--", *PHOTO_RUN,
                 "--out", str(out)])  # fmt: skip


def test_a_budgeted_run_ships_a_finished_checkpoint_whose_card_reproduces_it(tmp_path: Path) -> None:
    out = tmp_path / "photo"
    assert budgeted(40, 2, out) == 0  # room for slow start-ups: two tests at once on two cores
    card = json.loads(out.with_suffix(".json").read_text())
    training = card["training"]
    assert [h["epoch"] for h in training["history"]] == [1, 2]  # the whole schedule ran, not a cut-off one
    command = shlex.split(training["command"])
    # A plain dae-train command: the steps the budget chose are in it, the budget is not.
    assert command[0] == "dae-train" and "--budget-s" not in command
    assert int(command[command.index("--steps-per-epoch") + 1]) == training["steps_per_epoch"] > 2
    assert not list(tmp_path.glob("*.resume*"))


def test_a_budget_the_calibration_uses_up_is_refused_before_training(tmp_path: Path, capsys) -> None:
    out = tmp_path / "photo"
    assert budgeted(1, 1, out) == 2
    assert "the budget is too small" in capsys.readouterr().out
    assert not out.with_suffix(".json").exists()


def test_options_the_budget_sets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--budget-s", "60", "--", *PHOTO_RUN, "--steps-per-epoch", "5", "--out", str(tmp_path)])


def test_the_steps_fill_what_is_left_less_the_safety_share() -> None:
    cost = StepCost(per_step=0.01, per_epoch=1.0, fixed=10.0)
    # 100 s: 90 after the safety share, 80 after start-up, 70 after ten epochs' validation: 7,000 steps
    assert steps_per_epoch(cost, epochs=10, seconds=100.0, safety=0.1) == 700
    assert steps_per_epoch(cost, epochs=10, seconds=20.0, safety=0.1) < 1
