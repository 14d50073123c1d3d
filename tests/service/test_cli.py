"""``dae-serve`` / ``python -m service``: flags and DAE_ variables, multiprocess metrics set-up, settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from models.architectures import create_model
from models.device import cpu_has_native_bf16
from service import cli, placement
from service.settings import Settings


def test_python_m_service_documents_the_flags() -> None:
    result = subprocess.run([sys.executable, "-m", "service", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in ("--host", "--port", "--checkpoint-dir", "--workers"):
        assert flag in result.stdout


def test_flags_override_their_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DAE_PORT", "9000")
    monkeypatch.setenv("DAE_HOST", "0.0.0.0")
    for name in ("DAE_CHECKPOINT_DIR", "DAE_WORKERS"):  # recorded, so that teardown removes what the CLI writes
        monkeypatch.setenv(name, "")
    monkeypatch.chdir(tmp_path)
    cli.apply_flags(cli.parse_args(["--port", "8123", "--checkpoint-dir", "ckpts", "--workers", "3"]))
    settings = Settings()
    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 8123, 3)  # the unflagged one stays
    assert settings.checkpoint_dir == tmp_path / "ckpts"  # made absolute: workers may start elsewhere


def test_a_bad_setting_stops_dae_serve_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAE_MAX_BATCH_SIZE", "0")
    assert cli.main([]) == 2
    assert "DAE_MAX_BATCH_SIZE" in capsys.readouterr().err


def test_several_workers_get_a_fresh_metrics_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(cli._MULTIPROC_ENV, "recorded")  # so that teardown removes what the CLI writes
    monkeypatch.delenv(cli._MULTIPROC_ENV)
    assert cli.prepare_multiprocess_metrics(1) is None
    assert cli._MULTIPROC_ENV not in os.environ
    created = cli.prepare_multiprocess_metrics(2)
    assert created is not None and os.environ[cli._MULTIPROC_ENV] == created and Path(created).is_dir()
    os.rmdir(created)
    # A folder the operator chose is kept, but the values of an earlier run in it are wiped.
    stale = tmp_path / "counter_123.db"
    stale.write_bytes(b"old")
    monkeypatch.setenv(cli._MULTIPROC_ENV, str(tmp_path))
    assert cli.prepare_multiprocess_metrics(4) is None
    assert not stale.exists()


def test_settings_parse_lists_and_treat_an_empty_key_as_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAE_CORS_ORIGINS", "http://a.example, http://b.example")
    monkeypatch.setenv("DAE_API_KEY", "")
    settings = Settings()
    assert settings.cors_origins == ["http://a.example", "http://b.example"]
    assert settings.api_key is None


MODELS = {
    "conv": create_model("conv", channels=4),
    "mlp": create_model("mlp"),
    "photo": create_model("conv", channels=4),
}


def plan(cores: int, device: str = "cpu", **settings: Any) -> tuple[dict[str, placement.Backend], int, int, int, int]:
    """(backend per model, inference threads, torch threads here, in the child, for a request alone in the worker)."""
    worker = placement.plan_worker(
        Settings(device=device, default_photo_model="photo", **settings), MODELS, cores=cores
    )
    backends = {name: p.backend for name, p in worker.placements.items()}
    threads = (worker.torch_threads, worker.child_torch_threads, worker.alone_torch_threads)
    return backends, worker.inference_threads, *threads


def test_auto_placement_puts_mlps_on_the_loop_and_convolutions_in_a_child_when_the_worker_has_two_cores() -> None:
    # One core for the event loop, one for the child's forward; the next batch waits queued behind it. A request
    # alone in the worker gets both, on the event loop: it has nothing else to do.
    # The photo model in threads beside them: on photos, single-threaded forwards side by side do more.
    assert plan(2) == ({"conv": "process", "mlp": "loop", "photo": "thread"}, 2, 1, 1, 2)
    # One core per worker: nothing to run side by side, so no child process.
    assert plan(2, workers=2) == ({"conv": "thread", "mlp": "loop", "photo": "thread"}, 1, 1, 1, 1)
    assert plan(16) == ({"conv": "process", "mlp": "loop", "photo": "thread"}, 2, 7, 15, 16)
    assert plan(16, workers=8) == ({"conv": "process", "mlp": "loop", "photo": "thread"}, 2, 1, 1, 2)
    assert plan(16, torch_threads=3)[2:] == (3, 3, 3)  # DAE_TORCH_THREADS is every forward's
    # An explicit backend applies to every model.
    assert plan(2, inference_backend="process")[0] == {"conv": "process", "mlp": "process", "photo": "process"}
    assert plan(2, inference_backend="loop")[0] == {"conv": "loop", "mlp": "loop", "photo": "loop"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to resolve a cuda device")
@pytest.mark.cuda
def test_on_cuda_every_forward_runs_in_one_inference_thread() -> None:
    assert plan(16, device="cuda") == ({"conv": "thread", "mlp": "thread", "photo": "thread"}, 1, 16, 16, 16)
    threads = {"conv": "thread", "mlp": "thread", "photo": "thread"}
    assert plan(16, device="cuda", inference_backend="process")[0] == threads


def test_a_forward_holds_a_batch_of_digits_but_one_photo_on_a_cpu() -> None:
    cpu = placement.plan_worker(Settings(device="cpu"), MODELS, cores=2).batch_pixels
    assert 32 * 28 * 28 <= cpu < 2 * 256 * 256
    assert placement.plan_worker(Settings(device="cpu", max_batch_pixels=5), MODELS, cores=2).batch_pixels == 5


def test_the_thread_backend_runs_single_threaded_forwards_side_by_side_on_a_cpu() -> None:
    threads = {"conv": "thread", "mlp": "thread", "photo": "thread"}
    # A request alone in the worker gets every core of it (the last figure) whatever the backend.
    assert plan(2, inference_backend="thread") == (threads, 2, 1, 1, 2)
    # At most four forwards at once, the rest of the cores intra-op.
    assert plan(16, inference_backend="thread")[1:] == (4, 4, 4, 16)
    assert plan(16, workers=4, inference_backend="thread")[1:] == (4, 1, 1, 4)
    assert plan(2, inference_backend="thread", inference_threads=3, torch_threads=2)[1:] == (3, 2, 2, 2)
    backends = {"conv": "process", "mlp": "loop", "photo": "thread"}
    assert plan(2, inference_threads=3, torch_threads=2) == (backends, 3, 2, 2, 2)


def test_auto_precision_is_bfloat16_only_for_convolutions_on_a_cpu_that_has_it() -> None:
    cpu = torch.device("cpu")
    conv, mlp = MODELS["conv"], MODELS["mlp"]
    assert placement.serving_dtype("float32", cpu, conv) == torch.float32
    assert placement.serving_dtype("bfloat16", cpu, mlp) == torch.bfloat16
    assert placement.serving_dtype("auto", torch.device("cuda"), conv) == torch.float32
    native = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert placement.serving_dtype("auto", cpu, conv) == native
    assert placement.serving_dtype("auto", cpu, mlp) == torch.float32  # casting its weights costs more than it saves
    with pytest.raises(ValueError, match="auto, float32 or bfloat16"):
        placement.serving_dtype("float16", cpu, conv)


def test_available_cores_honours_a_container_cpu_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(placement, "_cgroup_cpu_limit", lambda: 2.5)
    assert placement.available_cores() == 3
    monkeypatch.setattr(placement, "_cgroup_cpu_limit", lambda: None)
    assert placement.available_cores() == 16
