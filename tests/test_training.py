"""Training and evaluation on the committed fixture of real MNIST images, through the real commands."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
import torch
from torch import nn

import training.train as train_module
from models.architectures import MODEL_REGISTRY, register_model
from models.checkpoint import load_checkpoint
from tests.conftest import FIXTURE_ROOT, REPO
from training.cli import eval_main, parse_arch_arg, train_config, train_main, train_parser
from training.study.config import StudyConfig
from training.study.zoo import SPEC_BY_NAME, ModelZoo
from training.train import TrainConfig

QUICK = ["--data-root", str(FIXTURE_ROOT), "--batch-size", "32", "--seed", "3"]


def card_of(stem: Path) -> dict:
    return json.loads(stem.with_suffix(".json").read_text())


def test_short_run_lowers_validation_loss_and_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "mlp"
    assert train_main([*QUICK, "--arch", "mlp", "--noise", "gaussian", "--epochs", "6", "--out", str(out)]) == 0
    card = card_of(out)
    history = card["training"]["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert max(h["val_psnr_db"] for h in history[1:]) > history[0]["val_psnr_db"]
    assert card["best_epoch"] == 1 + max(range(6), key=lambda i: history[i]["val_psnr_db"])
    assert card["training"]["command"].startswith("dae-train ")
    assert not list(tmp_path.glob("*.resume*")), "resume state is removed once the run completes"
    _, loaded = load_checkpoint(out)
    assert loaded.noise == "gaussian" and loaded.noise_level == 0.3 and loaded.dataset == "mnist"


def test_no_validation_slice_trains_on_the_whole_split_and_keeps_the_last_epoch(tmp_path: Path) -> None:
    out = tmp_path / "all"
    assert train_main([*QUICK, "--arch", "mlp", "--epochs", "2", "--val-images", "0", "--out", str(out)]) == 0
    card = card_of(out)
    assert card["training"]["train_images"] == 600 and card["training"]["val_images"] == 0
    assert card["best_epoch"] == 2 and card["training"]["val_psnr_db"] is None
    assert train_main([*QUICK, "--epochs", "1", "--val-images", "-1", "--out", str(out)]) == 2


def test_conv_run_on_fashion_writes_a_model_for_any_size(tmp_path: Path) -> None:
    out = tmp_path / "conv"
    args = [*QUICK, "--dataset", "fashion-mnist", "--arch", "conv", "--arch-arg", "channels=8", "--noise", "mixed"]
    assert train_main([*args, "--epochs", "2", "--schedule", "cosine", "--out", str(out)]) == 0
    model, card = load_checkpoint(out)
    assert card.architecture == "conv" and card.input_size is None and card.dataset == "fashion-mnist"
    with torch.inference_mode():
        assert model(torch.rand(1, 1, 37, 50)).shape == (1, 1, 37, 50)


def test_arch_args_reach_the_model_and_its_card(tmp_path: Path) -> None:
    out = tmp_path / "unet"
    args = [*QUICK, "--arch", "conv", "--arch-arg", "channels=4", "--arch-arg", "depth=1", "--epochs", "1"]
    assert train_main([*args, "--limit", "64", "--val-images", "16", "--out", str(out)]) == 0
    card = card_of(out)
    assert card["hyperparameters"] == {"channels": 4, "depth": 1}
    assert card["training"]["config"]["arch_args"] == {"channels": 4, "depth": 1}
    assert "channels" not in card["training"]["config"]
    assert card["training"]["command"] == shlex.join(["dae-train", *args, "--limit", "64", "--val-images", "16",
                                                      "--out", str(out)])  # fmt: skip
    model, _ = load_checkpoint(out)
    assert sum(p.numel() for p in model.parameters()) == card["parameters"]


def test_unknown_arch_arg_is_refused_naming_the_valid_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train_main([*QUICK, "--arch", "conv", "--arch-arg", "width=8", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'width'" in err and "channels, depth" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        train_main([*QUICK, "--arch-arg", "channels", "--out", str(tmp_path / "x")])  # no =VALUE
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "nothing is written for a refused command"


def test_arch_arg_values_are_read_as_json_where_they_parse() -> None:
    assert parse_arch_arg("channels=32") == ("channels", 32)
    assert parse_arch_arg("scale=0.5") == ("scale", 0.5)
    assert parse_arch_arg("hidden=[128,64]") == ("hidden", [128, 64])
    assert parse_arch_arg("bias=false") == ("bias", False)
    assert parse_arch_arg("act=gelu") == ("act", "gelu")
    assert parse_arch_arg("expr=a=b") == ("expr", "a=b")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_arch_arg("=3")


def test_every_option_is_a_field_of_train_config_with_its_default() -> None:
    parser = train_parser()
    options = {a.dest for a in parser._actions if a.dest != "help"}
    assert options == {f.name for f in fields(TrainConfig)} - {"command"}
    for f in fields(TrainConfig):
        if f.name in options:
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            assert parser.get_default(f.name) == default, f.name
    given = train_config(["--out", "x"])
    assert given == TrainConfig(out="x", command="dae-train --out x")
    assert given.noise_level == 0.3  # no --level: the default noise's reference level


@pytest.fixture
def tiny_arch() -> Iterator[str]:
    """An architecture registered by a test, as a new one would be: a builder and its decorator."""
    name = "test-tiny-conv"

    @register_model(name)
    def tiny(width: int = 2) -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 3, padding=1))

    yield name
    MODEL_REGISTRY.pop(name)


def test_a_newly_registered_architecture_is_trainable_by_name(tiny_arch: str, tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    args = [*QUICK, "--arch", tiny_arch, "--arch-arg", "width=3", "--epochs", "1", "--limit", "64"]
    assert train_main([*args, "--val-images", "16", "--out", str(out)]) == 0
    model, card = load_checkpoint(out)
    assert card.architecture == tiny_arch and card.hyperparameters == {"width": 3} and card.input_size is None
    assert model(torch.rand(1, 1, 9, 11)).shape == (1, 1, 9, 11)


def test_the_study_records_a_command_that_rebuilds_its_recipe(tmp_path: Path) -> None:
    zoo = ModelZoo(StudyConfig(FIXTURE_ROOT, tmp_path / "r.md", tmp_path, tmp_path, quick=True), lambda _: None)
    for name in ("conv-blind", "mlp-standard"):
        recipe = zoo.recipe(SPEC_BY_NAME[name], tmp_path / name)
        assert train_config(shlex.split(recipe.command)[1:]) == recipe
    assert zoo.recipe(SPEC_BY_NAME["conv-blind"], tmp_path).arch_args == {"channels": 4}


def test_same_seed_same_weights(tmp_path: Path) -> None:
    for name in ("a", "b"):
        train_main([*QUICK, "--arch", "mlp", "--noise", "mixed", "--epochs", "2", "--out", str(tmp_path / name)])
    assert card_of(tmp_path / "a")["weights_sha256"] == card_of(tmp_path / "b")["weights_sha256"]


def test_resume_continues_an_interrupted_run_to_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [*QUICK, "--arch", "mlp", "--noise", "masking", "--epochs", "3"]
    train_main([*args, "--out", str(tmp_path / "whole")])

    real_validation = train_module.validation_psnr
    calls = {"n": 0}

    def crash_in_third_epoch(*a, **k):  # the run dies after two epochs' state was saved
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_validation(*a, **k)

    monkeypatch.setattr(train_module, "validation_psnr", crash_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_main([*args, "--out", str(tmp_path / "split")])
    assert (tmp_path / "split.resume.safetensors").is_file()
    monkeypatch.setattr(train_module, "validation_psnr", real_validation)
    assert train_main([*args, "--out", str(tmp_path / "split"), "--resume"]) == 0
    assert card_of(tmp_path / "split")["weights_sha256"] == card_of(tmp_path / "whole")["weights_sha256"]


def test_missing_data_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code = train_main(["--data-root", str(empty), "--epochs", "1", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2
    assert "missing train-images-idx3-ubyte, train-labels-idx1-ubyte" in err and str(empty) in err


def test_bad_level_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_main([*QUICK, "--level", "1.5", "--epochs", "1", "--out", str(tmp_path / "x")]) == 2
    assert "level must be in [0, 1]" in capsys.readouterr().err


def test_eval_reports_figures_and_writes_them_in_the_card(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m"
    train_main([*QUICK, "--arch", "mlp", "--noise", "gaussian", "--epochs", "2", "--out", str(out)])
    capsys.readouterr()
    args = ["--checkpoint", str(out), "--data-root", str(FIXTURE_ROOT), "--noise", "gaussian", "--level", "0.3"]
    assert eval_main([*args, "--json", "--write-card"]) == 0
    summary = json.loads(capsys.readouterr().out)
    figures = summary["results"]["gaussian@0.3"]
    assert summary["test_images"] == 200 and summary["dataset"] == "mnist"
    assert 0 < figures["mse"] < 0.1 and 0 < figures["ssim"] < 1
    assert figures["noisy_psnr_db"] == pytest.approx(13.3, abs=0.3)  # σ 0.3 on MNIST, as measured on the full split
    card = card_of(out)
    assert card["test_metrics"]["gaussian@0.3"]["psnr_db"] == pytest.approx(figures["psnr_db"], abs=1e-4)
    assert card["evaluation"]["split"] == "test"
    load_checkpoint(out)  # the card still verifies after the figures were written into it


def test_torchrun_two_processes_on_cpu_end_with_equal_weights(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]
    train_args = [*QUICK, "--arch", "mlp", "--epochs", "2", "--device", "cpu", "--out", str(out)]
    cmd = [*launcher, "-m", "training", "train", *train_args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    training = card_of(out)["training"]
    assert training["world_size"] == 2
    digests = training["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    load_checkpoint(out)


@pytest.mark.cuda
def test_cuda_training_with_bf16_lowers_validation_loss_and_loads_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    args = [*QUICK, "--arch", "conv", "--arch-arg", "channels=8", "--epochs", "4", "--device", "cuda"]
    assert train_main([*args, "--out", str(out)]) == 0
    card = card_of(out)
    assert card["training"]["device"].startswith("cuda")
    history = card["training"]["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    gpu_model, _ = load_checkpoint(out, "cuda")
    cpu_model, _ = load_checkpoint(out, "cpu")
    x = torch.rand(8, 1, 28, 28)
    with torch.inference_mode():
        # float32 on both: cuDNN and oneDNN differ only in summation order
        assert torch.allclose(gpu_model(x.cuda()).cpu(), cpu_model(x), atol=1e-4)
