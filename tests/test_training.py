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
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import training.train as train_module
from models.architectures import MODEL_REGISTRY, create_model, register_model
from models.checkpoint import load_checkpoint
from tests.conftest import FIXTURE_ROOT, REPO, exact_float32
from training.batches import PatchBatches
from training.cli import eval_main, parse_arch_arg, train_config, train_main, train_parser
from training.config import TrainConfig
from training.evaluate import to_float_batch
from training.graphed import GraphedStep
from training.init_from import initialise_from
from training.photos import load_photos
from training.study.config import StudyConfig
from training.study.zoo import SPEC_BY_NAME, ModelZoo
from training.train import training_loss, validation_psnr

QUICK = ["--data-root", str(FIXTURE_ROOT), "--batch-size", "32", "--seed", "3"]
PHOTO_FOLDER = FIXTURE_ROOT / "natural" / "train400"  # six 48×48 crops of real train400 photos
PHOTO_RUN = ["--data-root", str(FIXTURE_ROOT), "--arch", "unet-res", "--arch-arg", "channels=4",
             "--noise", "mixed_photo", "--patch-size", "16", "--batch-size", "4", "--epochs", "1",
             "--steps-per-epoch", "3", "--val-images", "2"]  # fmt: skip


def card_of(stem: Path) -> dict:
    return json.loads(stem.with_suffix(".json").read_text())


def test_short_run_lowers_validation_loss_and_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "mlp"
    assert train_main([*QUICK, "--arch", "mlp", "--noise", "gaussian", "--epochs", "6", "--out", str(out)]) == 0
    card = card_of(out)
    history = card["training"]["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert max(h["val_psnr_db"] for h in history[1:]) > history[0]["val_psnr_db"]
    assert all(h["train_s"] > 0 for h in history)  # each epoch's training time (what a step budget is sized from)
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


def test_bf16_on_a_cpu_is_opt_in_and_learns_as_well_as_float32(tmp_path: Path) -> None:
    args = [*QUICK, "--arch", "conv", "--arch-arg", "channels=8", "--noise", "gaussian", "--epochs", "3"]
    assert train_main([*args, "--out", str(tmp_path / "auto")]) == 0
    assert train_main([*args, "--precision", "bfloat16", "--out", str(tmp_path / "bf16")]) == 0
    auto, bf16 = card_of(tmp_path / "auto")["training"], card_of(tmp_path / "bf16")["training"]
    assert auto["precision"] == "float32", "auto keeps a CPU in float32, the numerics every CPU card records"
    assert bf16["precision"] == "bfloat16" and bf16["config"]["precision"] == "bfloat16"
    # Same seed, same data, same noise: autocast's bf16 forward must learn what float32 learns.
    assert bf16["history"][-1]["val_psnr_db"] > bf16["history"][0]["val_psnr_db"]
    assert abs(bf16["val_psnr_db"] - auto["val_psnr_db"]) < 0.5, (bf16["val_psnr_db"], auto["val_psnr_db"])
    model, _ = load_checkpoint(tmp_path / "bf16")
    assert all(p.dtype == torch.float32 for p in model.parameters()), "weights stay float32 under autocast"


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
    split, whole = card_of(tmp_path / "split"), card_of(tmp_path / "whole")
    assert split["weights_sha256"] == whole["weights_sha256"]
    # the card is the whole run's: every epoch's figures, and the time of both processes
    untimed = [
        [{k: v for k, v in h.items() if k != "train_s"} for h in c["training"]["history"]] for c in (split, whole)
    ]
    assert untimed[0] == untimed[1]
    assert [h["epoch"] for h in split["training"]["history"]] == [1, 2, 3]


def test_missing_data_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code = train_main(["--data-root", str(empty), "--epochs", "1", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2
    assert "missing train-images-idx3-ubyte, train-labels-idx1-ubyte" in err and str(empty) in err


def test_photo_run_on_train400_writes_a_model_for_any_size_and_a_folder_path_is_the_same_data(
    tmp_path: Path,
) -> None:
    assert train_main(["--dataset", "train400", *PHOTO_RUN, "--out", str(tmp_path / "named")]) == 0
    model, card = load_checkpoint(tmp_path / "named")
    assert card.dataset == "train400" and card.architecture == "unet-res" and card.noise == "mixed_photo"
    assert card_of(tmp_path / "named")["input_size"] is None
    training = card.training
    assert (training["train_images"], training["val_images"]) == (4, 2)
    assert training["config"]["patch_size"] == 16 and training["steps_per_epoch"] == 3
    assert training["val_psnr_db"] is not None
    with torch.inference_mode():
        assert model(torch.rand(1, 1, 37, 50)).shape == (1, 1, 37, 50)
    assert train_main(["--dataset", str(PHOTO_FOLDER), *PHOTO_RUN, "--out", str(tmp_path / "folder")]) == 0
    by_path = card_of(tmp_path / "folder")
    assert by_path["dataset"] == str(PHOTO_FOLDER)
    assert by_path["weights_sha256"] == card_of(tmp_path / "named")["weights_sha256"]  # same images, same seed


def dihedral(crop: torch.Tensor) -> list[torch.Tensor]:
    """The 8 symmetries of a square crop: four rotations, each with and without a mirror."""
    rotations = [torch.rot90(crop, k, dims=(-2, -1)) for k in range(4)]
    return [*rotations, *(r.flip(-1) for r in rotations)]


def test_patches_are_augmented_crops_of_the_train_images_reproducible_from_the_seed() -> None:
    # Every pixel value unique across the images, so a patch matches exactly one crop of one image.
    values = torch.randperm(256, generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    images = [values[:42].view(6, 7), values[42:82].view(8, 5), values[82:131].view(7, 7)]
    p = 4
    candidates, labels = [], []
    for index, image in enumerate(images):
        for top in range(image.shape[0] - p + 1):
            for left in range(image.shape[1] - p + 1):
                for symmetry, view in enumerate(dihedral(image[top : top + p, left : left + p])):
                    candidates.append(view)
                    labels.append((index, symmetry))
    batches = PatchBatches(images, p, batch=256, steps=2, seed=5)
    patches = batches.crops(torch.Generator().manual_seed(1))
    matches = (patches[:, None] == torch.stack(candidates)[None]).all(-1).all(-1)
    assert torch.all(matches.sum(1) == 1), "every patch is one symmetry of one crop of one image"
    found = [labels[i] for i in matches.int().argmax(1).tolist()]
    assert {i for i, _ in found} == {0, 1, 2} and {s for _, s in found} == set(range(8))

    def epoch(seed: int, number: int, rank: int = 0) -> list[torch.Tensor]:
        return list(PatchBatches(images, p, batch=8, steps=2, seed=seed, rank=rank).epoch(number))

    first = epoch(5, 0)
    assert len(first) == 2 and first[0].shape == (8, 1, p, p) and first[0].dtype == torch.float32
    assert all(torch.equal(a, b) for a, b in zip(first, epoch(5, 0), strict=True))
    for other in (epoch(6, 0), epoch(5, 1), epoch(5, 0, rank=1)):
        assert not torch.equal(first[0], other[0])
    assert PatchBatches.default_steps(images, p, 8) == 2  # ceil(131 pixels / 16 per patch / 8 per step)


def test_saturate_stretches_that_share_of_patches_into_pure_black_and_white() -> None:
    """``--saturate``: a share of the crops clip to 0 and 1 over whole regions; the rest are the plain crops."""
    gen = torch.Generator().manual_seed(0)
    images = [(64 + 128 * torch.rand((40, 40), generator=gen)).to(torch.uint8) for _ in range(3)]  # no 0 or 255

    def first_batch(share: float) -> torch.Tensor:
        return next(iter(PatchBatches(images, 16, batch=400, steps=1, seed=2, saturate=share).epoch(0)))

    plain, stretched = first_batch(0.0), first_batch(0.25)
    assert plain.min() > 0.2 and plain.max() < 0.8
    changed = (plain != stretched).flatten(1).any(1)
    assert 0.18 < changed.float().mean() < 0.32, "about a quarter of the patches"
    assert torch.equal(plain[~changed], stretched[~changed]), "the others are the plain crops"
    black = (stretched[changed] == 0).flatten(1).float().mean(1)
    white = (stretched[changed] == 1).flatten(1).float().mean(1)
    assert (black > 0.1).float().mean() > 0.2 and (white > 0.1).float().mean() > 0.2, "regions, not pixels"
    order = plain[changed].flatten(1).argsort(1)
    in_order = stretched[changed].flatten(1).gather(1, order)
    assert torch.all(in_order.diff(dim=1) >= -1e-6), "a monotone map of the pixels: the picture, not new content"


def test_photo_folders_may_mix_sizes_formats_and_colour(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gray, colour = rng.integers(0, 256, (20, 30), np.uint8), rng.integers(0, 256, (24, 24, 3), np.uint8)
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(gray).save(folder / "a.png")
    Image.fromarray(colour).save(folder / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    photos = load_photos(str(folder), "unused")
    assert [tuple(p.shape) for p in photos] == [(20, 30), (24, 24)] and photos[1].dtype == torch.uint8
    assert torch.equal(photos[0], torch.from_numpy(gray))
    args = ["--dataset", str(folder), *PHOTO_RUN[2:], "--patch-size", "8", "--val-images", "1"]
    assert train_main([*args, "--out", str(tmp_path / "m")]) == 0
    assert card_of(tmp_path / "m")["training"]["val_images"] == 1


def test_photo_validation_averages_over_images_of_different_sizes() -> None:
    val = [torch.full(size, 128, dtype=torch.uint8) for size in [(64, 64), (48, 80), (64, 64), (3, 500)]]
    model = train_module.build_model(TrainConfig(arch="unet-res", arch_args={"channels": 4})).eval()
    cfg = TrainConfig(noise="gaussian", level=0.1)
    # an untrained unet-res is the identity, so this is the noisy PSNR: σ 0.1 → 20 dB
    assert validation_psnr(model, val, cfg) == pytest.approx(20.0, abs=0.3)


def test_the_validation_noise_is_the_same_whatever_the_training_seed() -> None:
    """Validation figures compare across runs and fine-tuning stages, each with a --seed of its own."""
    val = list(load_photos("train400", FIXTURE_ROOT))
    model = train_module.build_model(TrainConfig(arch="unet-res", arch_args={"channels": 4})).eval()
    figures = {seed: validation_psnr(model, val, TrainConfig(noise="mixed_photo", seed=seed)) for seed in (0, 3, 7)}
    assert len(set(figures.values())) == 1, figures  # the identity scores the noisy input: any other draw differs
    assert 10.0 < figures[0] < 40.0


def test_missing_photos_or_patches_that_do_not_fit_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["--patch-size", "16", "--out", str(tmp_path / "x")]
    nowhere = tmp_path / "nowhere"
    assert train_main(["--dataset", str(nowhere), *out]) == 2
    assert str(nowhere) in capsys.readouterr().err
    assert train_main(["--dataset", "train400", "--data-root", str(tmp_path), *out]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "natural" / "train400") in err and str(tmp_path / "train400") in err
    (tmp_path / "empty").mkdir()
    assert train_main(["--dataset", str(tmp_path / "empty"), *out]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "empty") in err and "no image files" in err
    assert train_main(["--dataset", str(PHOTO_FOLDER), "--out", str(tmp_path / "x")]) == 2
    assert "give --patch-size" in capsys.readouterr().err
    assert train_main(["--dataset", str(PHOTO_FOLDER), "--patch-size", "64", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--patch-size 64 does not fit" in err and "Traceback" not in err
    assert not list(tmp_path.glob("x*")), "nothing is written for a refused run"


def test_bad_level_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_main([*QUICK, "--level", "1.5", "--epochs", "1", "--out", str(tmp_path / "x")]) == 2
    assert "level must be in [0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--gaussian-share", "--faint-share"])
def test_noise_shares_are_recorded_and_refused_for_noises_without_one(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = ["--dataset", str(PHOTO_FOLDER), *PHOTO_RUN, flag, "0.85"]
    assert train_main([*run, "--out", str(tmp_path / "photo")]) == 0
    training = card_of(tmp_path / "photo")["training"]
    option = flag[2:].replace("-", "_")
    assert training["config"][option] == 0.85 and f"{flag} 0.85" in training["command"]
    # validation keeps the registered mix, so that its figures compare with other runs' and stages'
    model, _ = load_checkpoint(tmp_path / "photo")
    val = [torch.full((16, 16), 40 + 4 * i, dtype=torch.uint8) for i in range(40)]  # 40 draws of the noise type
    shared, plain = TrainConfig(noise="mixed_photo", **{option: 0.85}), TrainConfig(noise="mixed_photo")
    assert validation_psnr(model.eval(), val, shared) == validation_psnr(model, val, plain)
    refused = {"--noise gaussian has no share": ["--noise", "gaussian"], "in [0, 1]": [flag, "1.5"]}
    for message, bad in refused.items():
        assert train_main([*run, *bad, "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("x*"))


def test_saturate_without_patches_is_refused_not_ignored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_main([*QUICK, "--saturate", "0.25", "--epochs", "1", "--out", str(tmp_path / "x")]) == 2
    assert "--saturate stretches the contrast of patches: give --patch-size" in capsys.readouterr().err
    assert not list(tmp_path.glob("x*"))


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


def assert_same_outputs_on_cuda_and_cpu(run: Path, x: torch.Tensor) -> None:
    """The checkpoint at ``run``, loaded on the GPU and on the CPU, computes the same on ``x`` (TF32 off)."""
    gpu_model, _ = load_checkpoint(run, "cuda")
    cpu_model, _ = load_checkpoint(run, "cpu")
    with torch.inference_mode(), exact_float32():
        assert torch.allclose(gpu_model(x.cuda()).cpu(), cpu_model(x), atol=1e-4)


@pytest.mark.cuda
def test_cuda_training_runs_bf16_autocast_and_fused_adam_and_its_checkpoints_cross_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    optimizers: list[torch.optim.Optimizer] = []
    make_optimizer = train_module.make_optimizer

    def recorded(model: nn.Module, lr: float) -> torch.optim.Optimizer:
        optimizers.append(make_optimizer(model, lr))
        return optimizers[-1]

    monkeypatch.setattr(train_module, "make_optimizer", recorded)
    conv_outputs: set[torch.dtype] = set()  # what the convolutions compute in while the model trains

    def note_dtype(module: nn.Module, _: Any, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d) and module.training:
            conv_outputs.add(output.dtype)

    gpu_run, cpu_run = tmp_path / "gpu", tmp_path / "cpu"
    args = [*QUICK, "--arch", "conv", "--arch-arg", "channels=8", "--epochs", "4"]
    hook = torch.nn.modules.module.register_module_forward_hook(note_dtype)
    try:
        assert train_main([*args, "--device", "cuda", "--out", str(gpu_run)]) == 0
    finally:
        hook.remove()
    assert conv_outputs == {torch.bfloat16}
    assert len(optimizers) == 1 and optimizers[0].param_groups[0]["fused"] is True
    card = card_of(gpu_run)
    assert card["training"]["device"].startswith("cuda") and card["training"]["precision"] == "bfloat16"
    history = card["training"]["history"]
    assert history[-1]["val_psnr_db"] > history[0]["val_psnr_db"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]

    assert train_main([*args, "--epochs", "1", "--device", "cpu", "--out", str(cpu_run)]) == 0
    x = torch.rand(8, 1, 28, 28)
    for run in (gpu_run, cpu_run):  # trained on the GPU, and on the CPU: each loads on both, to the same outputs
        assert_same_outputs_on_cuda_and_cpu(run, x)


@pytest.mark.cuda
def test_photo_training_on_cuda_draws_its_patches_there_and_its_checkpoint_serves_on_a_cpu(tmp_path: Path) -> None:
    """The photo lease's recipe in small (bench/gpu_photo.sh): patches, stretches and mixed photo noise drawn on
    the GPU, and the checkpoint it writes computes on a CPU what it computes there."""
    photos = load_photos("train400", FIXTURE_ROOT)
    patches = next(iter(PatchBatches(photos, 32, batch=64, steps=1, seed=1, device="cuda", saturate=0.35).epoch(0)))
    assert patches.is_cuda and patches.shape == (64, 1, 32, 32) and 0 <= patches.min() <= patches.max() <= 1
    out = tmp_path / "photo"
    recipe = ["--gaussian-share", "0.8", "--saturate", "0.35", "--arch-arg", "channels=8", "--patch-size", "32"]
    steps = ["--batch-size", "16", "--epochs", "3", "--steps-per-epoch", "100", "--device", "cuda"]
    assert train_main(["--dataset", "train400", *PHOTO_RUN, *recipe, *steps, "--out", str(out)]) == 0
    training = card_of(out)["training"]
    assert training["device"].startswith("cuda") and training["precision"] == "bfloat16"
    assert training["history"][-1]["train_loss"] < training["history"][0]["train_loss"]
    assert_same_outputs_on_cuda_and_cpu(out, to_float_batch(photos[0][None]))  # a whole 48×48 photo, not a patch


@pytest.mark.cuda
@pytest.mark.parametrize(
    "model", [["--arch", "mlp"], ["--arch", "conv", "--arch-arg", "channels=8", "--noise", "mixed"]]
)
def test_cuda_graphs_train_as_the_eager_loop_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: list[str]
) -> None:
    made: list[GraphedStep] = []

    class Recorded(GraphedStep):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(train_module, "GraphedStep", Recorded)
    # cosine: a new learning rate each epoch, so each epoch captures anew
    args = [*QUICK, *model, "--epochs", "3", "--schedule", "cosine", "--device", "cuda"]
    runs = {name: tmp_path / name for name in ("eager", "graphed", "again")}
    assert train_main([*args, "--out", str(runs["eager"])]) == 0
    for name in ("graphed", "again"):
        assert train_main([*args, "--cuda-graphs", "--out", str(runs[name])]) == 0
    cards = {name: card_of(path) for name, path in runs.items()}
    steps = cards["graphed"]["training"]["steps_per_epoch"]
    assert made[0].replays >= 3 * (steps - 1), f"{made[0].replays} of {3 * steps} steps came from the graph"
    eager, graphed, again = (cards[name]["training"]["history"] for name in ("eager", "graphed", "again"))
    # The same training with another draw of the noise (the default generator's): as good, epoch by epoch (on a
    # CPU, other draws of the whole run's randomness moved these epochs' figures by up to 0.25 dB).
    for by_eager, by_graph in zip(eager, graphed, strict=True):
        assert by_graph["val_psnr_db"] == pytest.approx(by_eager["val_psnr_db"], abs=0.4)
    assert graphed[-1]["val_psnr_db"] > graphed[0]["val_psnr_db"]
    # ...and reproducible: the same seed, the same run
    assert [e["val_psnr_db"] for e in again] == pytest.approx([e["val_psnr_db"] for e in graphed], abs=0.01)


def test_cuda_graphs_without_cuda_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "x"
    assert train_main([*QUICK, "--epochs", "1", "--device", "cpu", "--cuda-graphs", "--out", str(out)]) == 2
    assert not out.with_suffix(".json").exists()


def test_log_mse_pulls_on_a_faint_error_as_hard_as_mean_psnr_weighs_it() -> None:
    """--loss log-mse is minus the batch's mean PSNR: the faint image's error, a tenth of the heavy one's, gets
    ten times its pull per pixel, where the plain MSE gives it a tenth."""
    clean = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    error = torch.tensor([0.03, 0.3]).view(2, 1, 1, 1) * torch.ones_like(clean)
    pulls = {}
    for loss in ("mse", "log-mse"):
        out = (clean + error).requires_grad_()
        value = training_loss(out, clean, loss)
        value.backward()
        assert out.grad is not None
        pulls[loss] = out.grad.flatten(1).norm(dim=1)
        if loss == "log-mse":
            psnr = -10 * torch.log10(error.square().flatten(1).mean(1))
            assert value.item() == pytest.approx(-psnr.mean().item(), abs=0.05)  # the floor, 1e-5, barely shows
    assert pulls["mse"][0] / pulls["mse"][1] == pytest.approx(0.1, rel=1e-3)
    assert pulls["log-mse"][0] / pulls["log-mse"][1] == pytest.approx(10, rel=0.02)
    with pytest.raises(ValueError, match="--loss must be one of mse, log-mse"):
        training_loss(clean, clean, "l1")


def test_init_from_fine_tunes_a_checkpoint_and_records_where_its_weights_came_from(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    args = [*QUICK, "--arch", "conv", "--arch-arg", "channels=4", "--noise", "mixed", "--limit", "64"]
    assert train_main([*args, "--epochs", "2", "--val-images", "16", "--out", str(first)]) == 0
    # lr 0: the fine-tuned model is the first one, so its validation PSNR is the first run's best, to the digit
    assert train_main([*args, "--epochs", "1", "--val-images", "16", "--lr", "0", "--init-from", str(first),
                       "--out", str(second)]) == 0  # fmt: skip
    before, after = card_of(first), card_of(second)
    assert after["training"]["history"][0]["val_psnr_db"] == pytest.approx(before["training"]["val_psnr_db"], abs=1e-3)
    record = after["training"]["init_from"]
    assert record["weights_sha256"] == before["weights_sha256"] and record["command"] == before["training"]["command"]
    # fine-tuned again: the third stage's card still names the first, nested under the second
    third = tmp_path / "third"
    assert train_main([*args, "--epochs", "1", "--val-images", "16", "--init-from", str(second),
                       "--out", str(third)]) == 0  # fmt: skip
    chain = card_of(third)["training"]["init_from"]
    assert chain["weights_sha256"] == after["weights_sha256"] and chain["init_from"] == record
    # a checkpoint of another shape is refused with a message naming what it holds
    other = [*QUICK, "--arch", "conv", "--arch-arg", "channels=8", "--limit", "64", "--epochs", "1"]
    assert train_main([*other, "--init-from", str(first), "--out", str(tmp_path / "bad")]) == 2


def test_init_from_grows_a_photo_model_by_residual_blocks_that_start_as_the_identity(tmp_path: Path) -> None:
    first, grown = tmp_path / "first", tmp_path / "grown"
    run = ["--dataset", "train400", *PHOTO_RUN]
    assert train_main([*run, "--out", str(first)]) == 0
    # lr 0: the grown model computes what the first one did, so it validates at the first one's figure
    assert train_main([*run, "--arch-arg", "blocks=2", "--lr", "0", "--init-from", str(first),
                       "--out", str(grown)]) == 0  # fmt: skip
    before, after = card_of(first), card_of(grown)
    assert after["training"]["history"][0]["val_psnr_db"] == pytest.approx(before["training"]["val_psnr_db"], abs=1e-3)
    assert after["hyperparameters"] == {"channels": 4, "depth": 2, "blocks": 2}
    assert after["training"]["init_from"]["new_tensors"] == 2 * 2 * 4  # 2 levels × 2 blocks × 2 convs' weight and bias
    assert after["parameters"] > before["parameters"]
    model, _ = load_checkpoint(grown)
    source, _ = load_checkpoint(first)
    x = torch.rand(1, 1, 21, 30)
    with torch.inference_mode():
        assert torch.allclose(model(x), source(x), atol=1e-6)


def test_init_from_refuses_new_layers_that_would_change_what_the_model_computes(tmp_path: Path) -> None:
    first = tmp_path / "first"
    assert train_main(["--dataset", "train400", *PHOTO_RUN, "--out", str(first)]) == 0
    grown = create_model("unet-res", channels=4, blocks=1)
    for block in grown.refine:
        for layer in block.modules():
            if isinstance(layer, torch.nn.Conv2d):
                torch.nn.init.constant_(layer.weight, 0.1)  # no longer the identity
    with pytest.raises(ValueError, match="more `blocks` may be added"):
        initialise_from(grown, str(first))
