"""The shipped models: present, verified on load, trained by the project's command, and denoising."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.checkpoint import load_checkpoint
from models.corruptions import corrupt, make_generator
from models.metrics import psnr_per_image
from tests.conftest import CHECKPOINT_DIR, FIXTURE_ROOT, PHOTO_MODELS, SHIPPED_MODELS, exact_float32
from training.cli import train_config
from training.data import load_split
from training.evaluate import evaluate
from training.study.zoo import recipe_hyperparameters

# What each model is tested on: its own training noise. The standard AE, trained on clean images only,
# is tested on salt-and-pepper: at light Gaussian noise it is worse than the noisy input itself.
TEST_NOISE = {
    "mlp-gaussian": ("gaussian", 0.3),
    "mlp-salt-pepper": ("salt_pepper", 0.2),
    "mlp-masking": ("masking", 0.3),
    "mlp-standard": ("salt_pepper", 0.2),
    "conv-blind": ("gaussian", 0.3),
    "conv-blind-fashion": ("gaussian", 0.3),
}
# Floors on the figures dae-eval recorded on the full test split, so that a retrained model that is
# worse than the one shipped is not shipped by mistake: mlp-gaussian must reproduce the reference
# (19.1 dB ± 0.3), and the two conv models keep the blind-denoising targets they were trained to meet.
CARD_TARGETS: dict[str, dict[str, tuple[float, float]]] = {
    "mlp-gaussian": {"gaussian@0.3": (18.8, 19.4)},
    "conv-blind": {"gaussian@0.3": (24.0, 99), "salt_pepper@0.2": (29.0, 99), "masking@0.3": (28.5, 99),
                   "gaussian@0.1": (30.0, 99), "gaussian@0.5": (20.5, 99)},
    "conv-blind-fashion": {"gaussian@0.3": (21.7, 99), "salt_pepper@0.2": (26.0, 99), "masking@0.3": (25.5, 99)},
    # The papers' protocol on the whole sets (dae-eval --dataset set12|bsd68): what the shipped one scores.
    "photo-blind": {"bsd68:gaussian@15/255": (30.5, 99), "bsd68:gaussian@25/255": (28.2, 99),
                    "bsd68:gaussian@50/255": (25.1, 99), "bsd68:salt_pepper@0.2": (34.4, 99),
                    "bsd68:masking@0.3": (33.5, 99), "set12:gaussian@25/255": (28.7, 99)},
}  # fmt: skip


def test_every_shipped_model_is_there() -> None:
    present = {p.stem for p in CHECKPOINT_DIR.glob("*.json")}
    assert set(SHIPPED_MODELS) <= present


def photo_psnrs(model: torch.nn.Module, noise: str, level: float) -> tuple[list[float], list[float]]:
    """(noisy, denoised) PSNR of each of the fixture's crops of Set12 photos, noise seeded."""
    noisy_db, denoised_db = [], []
    for index, path in enumerate(sorted((FIXTURE_ROOT / "natural" / "set12").glob("*.png"))):
        clean = torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255.0)[None, None]
        noisy = corrupt(clean, noise, level, make_generator(index))
        with torch.inference_mode():
            denoised = model.eval()(noisy)
        noisy_db.append(float(psnr_per_image(noisy, clean)))
        denoised_db.append(float(psnr_per_image(denoised, clean)))
    return noisy_db, denoised_db


@pytest.mark.parametrize("name", PHOTO_MODELS)
@pytest.mark.parametrize("noise,level", [("gaussian", 15 / 255), ("gaussian", 50 / 255), ("salt_pepper", 0.2),
                                         ("masking", 0.3)])  # fmt: skip
def test_a_photo_model_makes_real_photos_better_at_every_noise_of_the_panel(
    name: str, noise: str, level: float
) -> None:
    model, _ = load_checkpoint(CHECKPOINT_DIR / name)
    noisy, denoised = map(np.mean, photo_psnrs(model, noise, level))
    assert denoised > noisy + 2.0, (noisy, denoised)


@pytest.mark.parametrize("name", PHOTO_MODELS)
def test_a_photo_model_makes_a_nearly_clean_photo_better_not_worse(name: str) -> None:
    # σ 2/255: the faint noise of a phone photo in good light. The model before --faint-share took the fine
    # texture of two of these three crops for noise and smoothed it away (-0.68 and -0.26 dB).
    model, _ = load_checkpoint(CHECKPOINT_DIR / name)
    noisy, denoised = photo_psnrs(model, "gaussian", 2 / 255)
    assert all(out > into for into, out in zip(noisy, denoised, strict=True)), (noisy, denoised)


@pytest.mark.parametrize("name", [name for name in SHIPPED_MODELS if name not in PHOTO_MODELS])
def test_shipped_model_loads_and_denoises_real_images(name: str) -> None:
    model, card = load_checkpoint(CHECKPOINT_DIR / name)
    assert card.name == name
    images, _ = load_split(card.dataset, "test", FIXTURE_ROOT, download=False)
    noise, level = TEST_NOISE[name]
    figures = evaluate(model, images, noise, level)
    assert figures["psnr_db"] > figures["noisy_psnr_db"] + 1.0, figures


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_card_records_how_it_was_made(name: str) -> None:
    _, card = load_checkpoint(CHECKPOINT_DIR / name)
    # The folder it was trained into may differ from checkpoints/ (a scratch folder, then copied); the name only where
    # the card says what it was trained as.
    assert card.training["command"].startswith("dae-train ")
    trained_as = re.escape(card.training.get("trained_as", name))
    assert re.search(rf"--out \S*\b{trained_as}(\s|$)", card.training["command"]), card.training["command"]
    assert card.training["device"] and card.training["wall_time_s"] > 0 and card.epochs >= 1
    assert card.model_extra and card.model_extra["evaluation"]
    if name in PHOTO_MODELS:
        assert {"set12", "bsd68"} <= set(card.model_extra["evaluation"]["photo_sets"])
        assert {"set12", "bsd68"} <= set(card.model_extra["baselines"])
    else:
        assert card.model_extra["evaluation"]["split"] == "test"
        assert card.model_extra["evaluation"]["test_images"] == 10000
    for key, (low, high) in CARD_TARGETS.get(name, {}).items():
        assert low <= card.test_metrics[key]["psnr_db"] <= high, (key, card.test_metrics[key])


def train_all_commands() -> dict[str, list[str]]:
    """Each model's ``dae-train`` arguments in ``checkpoints/train_all.sh``, its common ones included."""
    script = (CHECKPOINT_DIR / "train_all.sh").read_text()
    recipes = dict(re.findall(r'^\s+\[([\w-]+)\]="([^"]*)"', script, re.MULTILINE))
    assert '--data-root "$DATA_ROOT" --out "checkpoints/$name"' in script
    return {
        name: [*shlex.split(args), "--data-root", "data", "--out", f"checkpoints/{name}"]
        for name, args in recipes.items()
    }


# What a recipe decides, compared between a card and checkpoints/train_all.sh.
RECIPE_KEYS = ("dataset", "arch", "noise", "epochs", "batch_size", "lr", "schedule", "seed")


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_train_all_retrains_each_card_recipe(name: str) -> None:
    """Compared on meaning, not text: the cards predate ``--arch-arg`` (the conv ones say ``--channels 24``)."""
    _, card = load_checkpoint(CHECKPOINT_DIR / name)
    cfg = train_config(train_all_commands()[name])
    recorded = card.training["config"]
    for key in (*RECIPE_KEYS, "limit"):
        assert recorded[key] == getattr(cfg, key), key
    for key in ("patch_size", "val_images"):
        assert recorded.get(key, getattr(cfg, key)) == getattr(cfg, key), key
    # A model trained under another name and renamed when shipped says so (``trained_as``), the rest are as written.
    assert card.name == Path(cfg.out).name
    assert Path(recorded["out"]).name == card.training.get("trained_as", card.name)
    assert recorded.get("precision", "auto") == cfg.precision  # cards before --precision trained under auto
    assert recorded.get("init_from") == cfg.init_from  # a fine-tuned model names its first stage as the script does
    assert recorded["level"] == cfg.noise_level
    assert card.hyperparameters == recipe_hyperparameters(cfg)


@pytest.mark.parametrize("name", PHOTO_MODELS)
def test_train_all_retrains_every_earlier_stage_of_a_fine_tuned_card(name: str) -> None:
    """The card's chain of earlier stages (``init_from``, nested) against the script's stage recipes, stage by stage.

    A stage fine-tuned in place (``--init-from checkpoints/NAME`` for NAME itself) starts from the script's
    ``NAME-stageK`` recipes, the last first, which the script trains into ``checkpoints/NAME`` in order.
    """
    commands = train_all_commands()
    in_place = sorted(
        (s for s in commands if re.fullmatch(rf"{name}-stage\d+", s)), key=lambda s: -int(s[len(name) + 6 :])
    )
    earlier = iter(in_place)
    _, card = load_checkpoint(CHECKPOINT_DIR / name)
    record, current = card.training.get("init_from"), name
    while record is not None:
        stage = Path(train_config(commands[current]).init_from or "").name  # the stage the script fine-tunes from
        stage = next(earlier) if stage == name else stage
        recorded, recipe = train_config(shlex.split(record["command"])[1:]), train_config(commands[stage])
        for key in (*RECIPE_KEYS, "patch_size"):
            assert getattr(recorded, key) == getattr(recipe, key), (stage, key)
        assert Path(recorded.init_from or "").name == Path(recipe.init_from or "").name, stage
        current, record = stage, record.get("init_from")
    assert train_config(commands[current]).init_from is None  # the card's chain and the script's end together
    assert next(earlier, None) is None  # and every in-place stage of the script is on the card


def test_shipped_files_hold_weights_only() -> None:
    from safetensors import safe_open

    for name in SHIPPED_MODELS:
        with safe_open(str(CHECKPOINT_DIR / f"{name}.safetensors"), "pt") as f:
            assert not any(k.startswith(("optim", "best.")) for k in f.keys())  # noqa: SIM118


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["mlp-gaussian", "conv-blind", "photo-blind"])
def test_shipped_model_gives_the_same_output_on_cuda_and_cpu(name: str) -> None:
    gpu, _ = load_checkpoint(CHECKPOINT_DIR / name, "cuda")
    cpu, _ = load_checkpoint(CHECKPOINT_DIR / name, "cpu")
    x = torch.rand(16, 1, 64, 64) if name in PHOTO_MODELS else torch.rand(16, 1, 28, 28)
    with torch.inference_mode(), exact_float32():
        assert torch.allclose(gpu(x.cuda()).cpu(), cpu(x), atol=1e-4)
