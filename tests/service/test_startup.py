"""Start-up: readiness only after warm-up, the default model's fallback, and checkpoints that fail
verification stopping start-up (or skipped, when asked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.app import create_app
from service.registry import StartupError
from tests.service.conftest import AppClient, settings_for, shipped_models, upload


def test_an_unknown_default_model_falls_back_to_the_first_with_a_warning(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="service"):
        client = make_client(default_model="not-shipped")
    assert client.get("/models").json()["default_model"] == shipped_models()[0]
    assert "not-shipped" in caplog.text


def test_requests_before_warm_up_get_503_and_readyz_turns_200_after(
    make_client: Any, monkeypatch: pytest.MonkeyPatch, digit: bytes
) -> None:
    import threading

    from service.denoiser import Denoiser

    release = threading.Event()
    real_warm_up = Denoiser.warm_up

    def slow_warm_up(self: Denoiser, batch_sizes: list[int], tile: bool = False) -> None:
        assert release.wait(30)
        real_warm_up(self, batch_sizes, tile)

    monkeypatch.setattr(Denoiser, "warm_up", slow_warm_up)
    client = make_client(wait=False)
    assert client.get("/healthz").status_code == 200
    for response in (client.get("/readyz"), client.post("/denoise", files=upload(digit))):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert "warming up" in response.json()["detail"]
    release.set()
    client.wait_ready()
    assert client.post("/denoise", files=upload(digit)).status_code == 200


def _broken_copy(folder: Path, name: str = "broken") -> Path:
    """A card for ``name`` whose weights are a truncated copy of mlp-gaussian's: it fails verification."""
    card = json.loads((folder / "mlp-gaussian.json").read_text())
    card.update(name=name, weights_file=f"{name}.safetensors")
    (folder / f"{name}.json").write_text(json.dumps(card))
    weights = folder / f"{name}.safetensors"
    weights.write_bytes((folder / "mlp-gaussian.safetensors").read_bytes()[:-64])
    return weights


def test_a_checkpoint_failing_verification_stops_start_up_naming_the_file(checkpoint_copy: Path) -> None:
    weights = _broken_copy(checkpoint_copy)
    with pytest.raises(StartupError) as refused:
        AppClient(create_app(settings_for(checkpoint_dir=checkpoint_copy)))
    assert str(weights) in str(refused.value) and "sha256" in str(refused.value)
    assert "DAE_SKIP_BAD_CHECKPOINTS" in str(refused.value)


def test_skip_bad_checkpoints_starts_without_it_and_warns(
    checkpoint_copy: Path, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    weights = _broken_copy(checkpoint_copy)
    with caplog.at_level("WARNING", logger="service"):
        client = make_client(checkpoint_dir=checkpoint_copy, skip_bad_checkpoints=True)
    assert client.get("/readyz").json()["models"] == shipped_models()
    assert str(weights) in caplog.text


def test_a_folder_without_checkpoints_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="no usable checkpoint"):
        AppClient(create_app(settings_for(checkpoint_dir=tmp_path)))
