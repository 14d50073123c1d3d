"""``dae-eval`` on photos: the papers' protocol, the panel, and the baselines, on three committed Set12 crops."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from models.checkpoint import load_checkpoint
from models.metrics import psnr_per_image
from tests.conftest import FIXTURE_ROOT
from training.cli import eval_main, train_main
from training.photo_eval import (
    PHOTO_PANEL,
    evaluate_photos,
    load_test_photos,
    noisy_photo,
    photo_key,
    photo_panel,
)

PANEL_KEYS = ["gaussian@15/255", "gaussian@25/255", "gaussian@50/255", "salt_pepper@0.2", "masking@0.3"]
# A tiny untrained residual U-Net: its head starts at zero, so it is the identity until trained.
PHOTO_RUN = ["--dataset", "train400", "--data-root", str(FIXTURE_ROOT), "--arch", "unet-res",
             "--arch-arg", "channels=4", "--noise", "mixed_photo", "--patch-size", "16", "--batch-size", "4",
             "--epochs", "1", "--steps-per-epoch", "2", "--val-images", "2"]  # fmt: skip
SET12 = ["--dataset", "set12", "--data-root", str(FIXTURE_ROOT)]


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    return load_test_photos("set12", FIXTURE_ROOT).images


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("photo") / "tiny"
    assert train_main([*PHOTO_RUN, "--out", str(out)]) == 0
    return out


def test_fixture_holds_three_set12_crops_of_any_size(photos: list[torch.Tensor]) -> None:
    assert [tuple(p.shape) for p in photos] == [(64, 64), (64, 64), (50, 63)]
    assert all(p.dtype == torch.uint8 for p in photos)


def test_gaussian_noise_is_not_clipped_and_has_the_papers_noisy_psnr(photos: list[torch.Tensor]) -> None:
    clean, noisy = noisy_photo(photos[0], "gaussian", 25 / 255, seed=1234, index=0)
    assert noisy.min() < 0 or noisy.max() > 1, "the noisy input leaves [0, 1]: it is not clipped"
    assert psnr_per_image(noisy, clean).item() == pytest.approx(20 * math.log10(255 / 25), abs=0.3)  # 20.17 dB
    clipped = psnr_per_image(noisy.clamp(0, 1), clean).item()
    assert clipped > psnr_per_image(noisy, clean).item()
    again = noisy_photo(photos[0], "gaussian", 25 / 255, seed=1234, index=0)[1]
    assert torch.equal(noisy, again), "the noise depends only on the seed and the image's index"


def test_identity_model_scores_the_noisy_psnr(photos: list[torch.Tensor]) -> None:
    cpu = torch.device("cpu")
    for noise, level in PHOTO_PANEL:
        r = evaluate_photos(Identity(), photos, noise, level, 1234, cpu)
        if noise == "gaussian":  # the output is clamped to [0, 1], the noisy input is not: clamping only helps
            pairs = [noisy_photo(image, noise, level, 1234, index) for index, image in enumerate(photos)]
            clamped = sum(psnr_per_image(n.clamp(0, 1), c).item() for c, n in pairs) / len(pairs)
            assert r["psnr_db"] == pytest.approx(clamped, abs=1e-5) and r["psnr_db"] > r["noisy_psnr_db"]
        else:  # impulse noise stays in [0, 1]: the identity's output is the noisy image itself
            assert r["psnr_db"] == pytest.approx(r["noisy_psnr_db"], abs=1e-6)
        assert 0 < r["ssim"] < 1 and r["seconds_per_image"] >= 0


def test_keys_and_levels() -> None:
    assert [photo_key(n, level) for n, level in PHOTO_PANEL] == PANEL_KEYS
    assert photo_panel("gaussian", 0.0980) == [("gaussian", 25 / 255)]  # a σ/255 given to 3 digits is that σ
    assert photo_panel("gaussian", None) == [("gaussian", 25 / 255)]
    assert photo_key(*photo_panel("gaussian", 0.123)[0]) == "gaussian@0.123"
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        photo_panel("gaussian", 25)


def test_dae_eval_prints_the_photo_panel_and_writes_the_card(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert eval_main(["--checkpoint", str(checkpoint), *SET12]) == 0
    text = capsys.readouterr().out
    assert "tiny on set12 (3 images" in text and "not clipped" in text
    assert all(key in text for key in PANEL_KEYS)

    assert eval_main(["--checkpoint", str(checkpoint), *SET12, "--json", "--write-card"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dataset"] == "set12" and summary["test_images"] == 3 and summary["seed"] == 1234
    results = summary["results"]
    assert list(results) == PANEL_KEYS
    for r in results.values():
        assert set(r) == {"mse", "psnr_db", "ssim", "noisy_psnr_db", "seconds_per_image"}
    assert results["gaussian@25/255"]["noisy_psnr_db"] == pytest.approx(20.17, abs=0.3)
    assert results["gaussian@50/255"]["noisy_psnr_db"] == pytest.approx(14.15, abs=0.3)

    _, card = load_checkpoint(checkpoint)  # the card still verifies after the figures were written into it
    assert card.test_metrics["set12:gaussian@25/255"]["psnr_db"] == pytest.approx(
        results["gaussian@25/255"]["psnr_db"], abs=1e-4
    )
    assert card.model_extra is not None and card.model_extra["evaluation"]["photo_sets"]["set12"]["test_images"] == 3

    # --level as a fraction: the same key and the very same figures as the panel's row
    args = ["--checkpoint", str(checkpoint), *SET12, "--noise", "gaussian", "--level", "0.0980", "--json"]
    assert eval_main(args) == 0
    single = json.loads(capsys.readouterr().out)["results"]
    assert list(single) == ["gaussian@25/255"]
    for metric in ("psnr_db", "noisy_psnr_db", "ssim"):
        assert single["gaussian@25/255"][metric] == pytest.approx(results["gaussian@25/255"][metric], abs=1e-6)


def test_a_folder_path_is_a_test_set_and_a_photo_model_needs_one(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = FIXTURE_ROOT / "natural" / "set12"
    args = ["--checkpoint", str(checkpoint), "--dataset", str(folder), "--limit", "1", "--noise", "masking", "--json"]
    assert eval_main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dataset"] == "set12" and summary["test_images"] == 1
    assert eval_main(["--checkpoint", str(checkpoint), "--data-root", str(FIXTURE_ROOT)]) == 2
    assert "give --dataset set12 or bsd68" in capsys.readouterr().err
    assert eval_main(["--checkpoint", str(checkpoint), "--dataset", str(folder / "nothing-here")]) == 2
    assert "no folder" in capsys.readouterr().err


def test_baselines_report_bm3d_and_a_named_tuned_filter(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    args = ["--checkpoint", str(checkpoint), *SET12, "--baselines", "--limit", "1", "--workers", "1"]
    assert eval_main([*args, "--json", "--write-card"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    baselines = summary["baselines"]
    assert len(baselines["tuning_images"]) == 6  # the six train400 crops of the fixture: never the test set
    assert list(baselines["results"]) == PANEL_KEYS
    for key, b in baselines["results"].items():
        noisy = summary["results"][key]["noisy_psnr_db"]
        assert b["BM3D"]["psnr_db"] > noisy, (key, b["BM3D"])  # BM3D improves on its input, even on 64×64
        best = b["classical"]
        assert best["method"] in best["candidates"] and best["label"].startswith(best["method"])
        assert best["train_psnr_db"] == max(c["train_psnr_db"] for c in best["candidates"].values())
    assert baselines["results"]["gaussian@25/255"]["BM3D"]["sigma"] == pytest.approx(25 / 255)
    assert "train400" in baselines["results"]["masking@0.3"]["BM3D"]["sigma_source"]
    assert "tuning" in captured.err  # progress lines go to stderr, so stdout stays JSON
    _, card = load_checkpoint(checkpoint)
    extra = card.model_extra or {}
    assert extra["baselines"]["set12"]["results"]["gaussian@15/255"]["classical"]["method"]
    assert not any("BM3D" in key for key in card.test_metrics), "the model's own figures only"

    assert eval_main([*args, "--noise", "salt_pepper"]) == 0  # the text table names BM3D and the chosen filter
    text = capsys.readouterr().out
    best = baselines["results"]["salt_pepper@0.2"]["classical"]["label"]
    assert "BM3D" in text and "best classical filter" in text and best in text
