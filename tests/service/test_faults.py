"""Faults: damaged checkpoints stop start-up naming the file (through ``dae-serve`` and through the app's own
start-up), and a fault while serving fails that request alone, logged under its request id, while the
service goes on. (A checkpoint whose weights were cut short is also refused by a subprocess ``dae-serve`` in
test_server.py; a model raising on one image of a batch is in test_errors.py.)"""

from __future__ import annotations

import json
import logging
import logging.config
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.checkpoint import sha256_file
from service import cli
from service import denoiser as denoiser_module
from service.app import create_app
from service.images import Picture
from service.registry import StartupError
from tests.service.conftest import (
    FIXED_SIZE_MODEL,
    MODELS_IN_PROCESS,
    AppClient,
    denoise,
    png_bytes,
    runner_in_process,
    settings_for,
    upload,
)
from tests.service.test_errors import BreaksOnWhite

SOURCE = "mlp-gaussian"
BROKEN = "a-broken-model"  # sorts first: start-up meets it before loading the others


def _copy_as_broken(folder: Path) -> tuple[Path, Path]:
    """A second, renamed copy of a shipped checkpoint in ``folder``; returns (card, weights)."""
    card = json.loads((folder / f"{SOURCE}.json").read_text())
    card.update(name=BROKEN, weights_file=f"{BROKEN}.safetensors")
    card_path, weights_path = folder / f"{BROKEN}.json", folder / f"{BROKEN}.safetensors"
    weights_path.write_bytes((folder / f"{SOURCE}.safetensors").read_bytes())
    card_path.write_text(json.dumps(card))
    return card_path, weights_path


def truncated_weights(folder: Path) -> tuple[Path, str]:
    """Weights cut short, with a card updated to their new hash: the hash agrees, the file cannot be read."""
    card_path, weights = _copy_as_broken(folder)
    weights.write_bytes(weights.read_bytes()[:4096])
    card = json.loads(card_path.read_text())
    card["weights_sha256"] = sha256_file(weights)
    card_path.write_text(json.dumps(card))
    return weights, "not a readable safetensors file"


def unknown_architecture(folder: Path) -> tuple[Path, str]:
    card_path, _ = _copy_as_broken(folder)
    card = json.loads(card_path.read_text())
    card["architecture"] = "transformer-xl"
    card_path.write_text(json.dumps(card))
    return card_path, "unknown architecture 'transformer-xl'"


def mismatched_sha256(folder: Path) -> tuple[Path, str]:
    """One byte of the weights changed, the length kept: only the card's hash can tell."""
    _, weights = _copy_as_broken(folder)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    return weights, "does not match the card"


FAULTS: list[Callable[[Path], tuple[Path, str]]] = [truncated_weights, unknown_architecture, mismatched_sha256]


@pytest.mark.parametrize("damage", FAULTS, ids=lambda damage: damage.__name__)
def test_dae_serve_refuses_to_start_naming_the_file_and_the_problem(
    checkpoint_copy: Path,
    damage: Callable[[Path], tuple[Path, str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    named, problem = damage(checkpoint_copy)
    # dae-serve writes its flags into the environment and sets up process-wide logging: keep both to this test.
    for name in ("DAE_CHECKPOINT_DIR", "DAE_PORT"):
        monkeypatch.setenv(name, "")
    monkeypatch.setattr(logging.config, "dictConfig", lambda config: None)
    status = cli.main(["--checkpoint-dir", str(checkpoint_copy), "--port", "0"])
    stderr = capsys.readouterr().err
    assert status == 2
    assert str(named) in stderr and problem in stderr, stderr
    assert "DAE_SKIP_BAD_CHECKPOINTS" in stderr


@pytest.mark.parametrize("damage", FAULTS, ids=lambda damage: damage.__name__)
def test_the_apps_start_up_refuses_the_same_checkpoints(
    checkpoint_copy: Path, damage: Callable[[Path], tuple[Path, str]]
) -> None:
    """Each worker loads the checkpoints again at start-up, and refuses them the same way."""
    named, problem = damage(checkpoint_copy)
    with pytest.raises(StartupError) as refused:
        AppClient(create_app(settings_for(checkpoint_dir=checkpoint_copy)))
    assert str(named) in str(refused.value) and problem in str(refused.value)


def test_a_forward_that_raises_is_a_500_logged_under_its_request_id_and_only_that_request_fails(
    make_client: Any, digits: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(max_batch_size=16, **MODELS_IN_PROCESS)
    runner = runner_in_process(client.store, FIXED_SIZE_MODEL)
    runner.model = BreaksOnWhite(runner.model)
    white = png_bytes(np.full((28, 28), 255, dtype=np.uint8))

    def post(data: bytes, request_id: str) -> Any:
        return client.post(
            "/denoise", files=upload(data), data={"model": FIXED_SIZE_MODEL}, headers={"X-Request-ID": request_id}
        )

    # Sent together, so that the failing image usually shares a batch with good ones.
    with caplog.at_level(logging.ERROR, logger="service"), ThreadPoolExecutor(9) as pool:
        good = [pool.submit(post, digits[i], f"good-{i}") for i in range(8)]
        bad = pool.submit(post, white, "the-faulty-one")
        answers = [future.result() for future in good]
        failed = bad.result()
    assert [a.status_code for a in answers] == [200] * 8
    assert failed.status_code == 500
    assert failed.headers["x-request-id"] == "the-faulty-one"
    assert "cannot take a white image" in failed.json()["detail"]
    logged = [record for record in caplog.records if getattr(record, "request_id", None) == "the-faulty-one"]
    assert logged and all(record.levelno == logging.ERROR for record in logged)
    assert any("white image" in record.getMessage() for record in logged)
    assert not [r for r in caplog.records if str(getattr(r, "request_id", "")).startswith("good-")]
    assert client.get("/readyz").status_code == 200
    assert denoise(client, digits[9], model=FIXED_SIZE_MODEL)["model"] == FIXED_SIZE_MODEL


def test_an_unexpected_error_is_a_500_that_names_its_request_id_and_the_next_request_works(
    make_client: Any, digit: bytes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug outside the model (here the PNG encoder failing once) becomes a logged 500, not a dropped connection."""
    client = make_client()
    real_encode = denoiser_module.encode_answer
    failures = iter([True])

    def encode_failing_once(planes: np.ndarray, kind: Picture, media_type: str = "image/png") -> bytes:
        if next(failures, False):
            raise RuntimeError("encoder bug")
        return real_encode(planes, kind, media_type)

    monkeypatch.setattr(denoiser_module, "encode_answer", encode_failing_once)
    with caplog.at_level(logging.ERROR, logger="service"):
        failed = client.post("/denoise", files=upload(digit), headers={"X-Request-ID": "bug-1"})
    assert failed.status_code == 500
    assert failed.headers["x-request-id"] == "bug-1"
    assert "RuntimeError" in failed.json()["detail"] and "bug-1" in failed.json()["detail"]
    traced = [r for r in caplog.records if getattr(r, "request_id", None) == "bug-1" and r.exc_info]
    assert traced and "encoder bug" in str(traced[0].exc_info[1])  # type: ignore[index]
    assert client.post("/denoise", files=upload(digit)).status_code == 200
    assert client.get("/readyz").status_code == 200
