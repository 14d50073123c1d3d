"""``dae-serve`` / ``python -m service``: flags and DAE_ variables, multiprocess metrics set-up, settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service import cli
from service import settings as settings_module
from service.settings import InferencePlan, Settings


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


def test_the_inference_plan_puts_cpu_forwards_in_a_child_process_when_the_worker_has_two_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings_module, "available_cores", lambda: 2)
    # One core for the event loop, one for the child's forward; the next batch waits queued behind it.
    assert Settings(workers=1).inference_plan("cpu") == InferencePlan("process", 2, 1)
    # One core per worker: nothing to run side by side, so no child process.
    assert Settings(workers=2).inference_plan("cpu") == InferencePlan("thread", 1, 1)
    monkeypatch.setattr(settings_module, "available_cores", lambda: 16)
    assert Settings(workers=1).inference_plan("cpu") == InferencePlan("process", 2, 15)
    assert Settings(workers=8).inference_plan("cpu") == InferencePlan("process", 2, 1)
    assert Settings(workers=1).inference_plan("cuda") == InferencePlan("thread", 1, 16)  # CUDA: never a child
    assert Settings(workers=1, inference_backend="process").inference_plan("cuda").backend == "thread"


def test_the_thread_backend_runs_single_threaded_forwards_side_by_side_on_a_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings_module, "available_cores", lambda: 2)
    assert Settings(inference_backend="thread").inference_plan("cpu") == InferencePlan("thread", 2, 1)
    monkeypatch.setattr(settings_module, "available_cores", lambda: 16)
    # At most four forwards at once, the rest of the cores intra-op.
    assert Settings(inference_backend="thread").inference_plan("cpu") == InferencePlan("thread", 4, 4)
    assert Settings(workers=4, inference_backend="thread").inference_plan("cpu") == InferencePlan("thread", 4, 1)
    plan = Settings(inference_backend="thread", inference_threads=3, torch_threads=2).inference_plan("cpu")
    assert plan == InferencePlan("thread", 3, 2)
    assert Settings(inference_threads=3, torch_threads=2).inference_plan("cpu") == InferencePlan("process", 3, 2)


def test_available_cores_honours_a_container_cpu_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(settings_module, "_cgroup_cpu_limit", lambda: 2.5)
    assert settings_module.available_cores() == 3
    monkeypatch.setattr(settings_module, "_cgroup_cpu_limit", lambda: None)
    assert settings_module.available_cores() == 16
