"""docker-compose.yml and docker-compose.cpu.yml: valid for Compose, and saying what the deployment needs.

Debian's ``docker-compose`` (1.29, the Python client; `make test` installs it) validates the files without
an engine. It cannot read Compose v2's ``!reset`` tag, which the CPU override needs to drop the GPU
reservation (no override can remove a list entry otherwise), so the CPU combination is merged here by
Compose v2's rules and the result validated by docker-compose; where Compose v2 itself is installed it
checks the pair directly too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import ENV_PREFIX, Settings
from tests.conftest import REPO
from tests.deploy.conftest import (
    COMPOSE,
    COMPOSE_CPU,
    compose_config,
    compose_v2_config,
    load_compose,
    merge_override,
    run_compose,
)


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices") or []
    return [device for device in devices if "gpu" in device.get("capabilities", [])]


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container path → (source, mode) of a service's volumes as ``docker-compose config`` prints them."""
    found = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            mode = "ro" if entry.get("read_only") else "rw"
            found[entry["target"]] = (str(entry.get("source")), mode)
        else:
            parts = entry.split(":")
            mode = parts[2] if len(parts) > 2 else "rw"
            found[parts[1]] = (parts[0], mode)
    return found


def duration_s(value: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value):
        total += float(number) * units[unit]
    assert total > 0, f"cannot read the duration {value!r}"
    return total


@pytest.fixture(scope="module")
def config(compose_bin: str) -> dict[str, Any]:
    return compose_config(compose_bin, COMPOSE)


@pytest.fixture(scope="module")
def api(config: dict[str, Any]) -> dict[str, Any]:
    return config["services"]["api"]


def test_docker_compose_accepts_the_file(config: dict[str, Any]) -> None:
    assert set(config["services"]) == {"api", "train"}


def test_api_reserves_a_gpu(api: dict[str, Any]) -> None:
    devices = gpu_devices(api)
    assert devices, "api: no deploy.resources.reservations.devices entry with capability gpu"
    assert all(device.get("driver") == "nvidia" for device in devices)


def test_api_publishes_the_port_the_image_exposes(api: dict[str, Any]) -> None:
    targets = [port["target"] if isinstance(port, dict) else int(str(port).rsplit(":", 1)[-1]) for port in api["ports"]]
    assert targets == [8000]


def test_api_is_restarted_health_checked_and_limited(api: dict[str, Any]) -> None:
    assert api["restart"] in ("always", "unless-stopped", "on-failure")
    test = api["healthcheck"]["test"]
    assert test[0] == "CMD", "exec form: the image has no shell tools to rely on"
    assert any("/readyz" in part for part in test) and not any("curl" in part for part in test)
    limits = api["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0 and limits["memory"]
    assert api.get("init") is True, "tini forwards SIGTERM and reaps the worker processes"


def test_api_reads_checkpoints_read_only_where_the_image_has_them(api: dict[str, Any]) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    image_dir = re.search(r"^ENV DAE_CHECKPOINT_DIR=(\S+)", dockerfile, re.M)
    assert image_dir, "the Dockerfile sets DAE_CHECKPOINT_DIR"
    _, mode = mounts(api)[image_dir.group(1)]
    assert mode == "ro"
    assert "DAE_CHECKPOINT_DIR" not in api.get("environment", {}), "the image's path is the one mounted"


def test_stop_grace_period_covers_the_request_deadline(api: dict[str, Any]) -> None:
    """A request the service holds at SIGTERM may wait its whole deadline; the grace period must cover it."""
    grace = duration_s(api["stop_grace_period"])
    assert grace > Settings.model_fields["request_timeout_s"].default


def test_api_settings_are_the_services_own_with_its_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every DAE_ variable compose passes is a setting, every tunable setting is passed, and its default
    there is the service's default."""
    environment = load_compose(COMPOSE)["services"]["api"]["environment"]
    assert isinstance(environment, dict)
    defaults: dict[str, str] = {}
    for name, value in environment.items():
        assert name.startswith(ENV_PREFIX), name
        field = name.removeprefix(ENV_PREFIX).lower()
        assert field in Settings.model_fields, f"{name} is not a setting of service/settings.py"
        match = re.fullmatch(r"\$\{" + name + r":-(.*)\}", str(value))
        assert match, f"{name}: expected ${{{name}:-default}} so the shell or .env can set it"
        defaults[name] = match.group(1)
    # Every tunable reaches the container; where it listens and reads checkpoints is the image's business.
    passed = {name.removeprefix(ENV_PREFIX).lower() for name in environment}
    assert set(Settings.model_fields) - passed == {"checkpoint_dir", "host", "port"}
    for name in [name for name in list(os.environ) if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    service_defaults = Settings()
    for name, value in defaults.items():
        monkeypatch.setenv(name, value)
    from_compose = Settings()
    for name in defaults:
        field = name.removeprefix(ENV_PREFIX).lower()
        assert getattr(from_compose, field) == getattr(service_defaults, field), f"{name}: compose default differs"


def test_train_profile(compose_bin: str) -> None:
    help_text = run_compose(compose_bin, "--help").stdout
    assert "--profile" in help_text, "this docker-compose predates profiles (1.28); the train service needs them"
    config = compose_config(compose_bin, COMPOSE, profiles=("train",))
    train, api = config["services"]["train"], config["services"]["api"]
    assert train["profiles"] == ["train"] and "profiles" not in api
    assert train["entrypoint"] == ["dae-train"]
    args = train["command"]
    out = Path(args[args.index("--out") + 1])
    data_root = args[args.index("--data-root") + 1]
    train_mounts, api_mounts = mounts(train), mounts(api)
    assert data_root in train_mounts, "the data folder is mounted where --data-root points"
    # The checkpoint goes into the volume the api serves from.
    api_dir = next(target for target, (_, mode) in api_mounts.items() if mode == "ro")
    assert str(out.parent) in train_mounts
    assert train_mounts[str(out.parent)] == (api_mounts[api_dir][0], "rw")
    assert gpu_devices(train)


def test_train_command_trains_into_a_folder_the_service_loads(tmp_path: Path, fixture_root: Path) -> None:
    """The compose train command, run here on the test fixture for one epoch, writes a loadable checkpoint."""
    import torch

    from models.checkpoint import find_checkpoints
    from service.registry import load_models
    from training.cli import train_main

    args = list(load_compose(COMPOSE)["services"]["train"]["command"])
    out_name = Path(args[args.index("--out") + 1]).name
    replace = {"--data-root": str(fixture_root), "--out": str(tmp_path / out_name), "--epochs": "1"}
    for flag, value in replace.items():
        args[args.index(flag) + 1] = value
    assert train_main([*args, "--device", "cpu", "--limit", "128"]) == 0
    assert [path.stem for path in find_checkpoints(tmp_path)] == [out_name]
    assert [card.name for _, card in load_models(tmp_path, torch.device("cpu"))] == [out_name]


# --- the CPU override ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cpu_merged(compose_bin: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """docker-compose.yml + docker-compose.cpu.yml merged by Compose v2's rules, validated by docker-compose."""
    merged = merge_override(load_compose(COMPOSE), load_compose(COMPOSE_CPU))
    for service in merged["services"].values():  # resolved against the repository, not the temporary copy
        service["build"]["context"] = str(REPO)
    path = tmp_path_factory.mktemp("compose") / "docker-compose.cpu-merged.yml"
    path.write_text(yaml.safe_dump(merged, sort_keys=False))
    return compose_config(compose_bin, path, profiles=("train",))


def test_cpu_override_drops_every_gpu_reservation(cpu_merged: dict[str, Any]) -> None:
    for name, service in cpu_merged["services"].items():
        assert not gpu_devices(service), f"{name} still reserves a GPU under docker-compose.cpu.yml"


def test_cpu_override_builds_and_runs_the_cpu_image(cpu_merged: dict[str, Any], config: dict[str, Any]) -> None:
    for name, service in cpu_merged["services"].items():
        assert service["build"]["args"]["BASE"] == "cpu"
        assert service["image"].endswith(":cpu") and service["image"] != config["services"][name]["image"]
    assert cpu_merged["services"]["api"]["environment"]["DAE_DEVICE"] == "cpu"


def test_cpu_override_keeps_everything_else(cpu_merged: dict[str, Any], config: dict[str, Any]) -> None:
    gpu_api, cpu_api = config["services"]["api"], cpu_merged["services"]["api"]
    for key in ("command", "ports", "healthcheck", "restart", "stop_grace_period", "volumes", "init"):
        assert cpu_api[key] == gpu_api[key], key
    assert cpu_api["deploy"]["resources"]["limits"] == gpu_api["deploy"]["resources"]["limits"]


def test_cpu_override_with_compose_v2_when_installed() -> None:
    """Compose v2 (`docker compose`), which users run, reads the pair itself; checked where it exists."""
    config = compose_v2_config(COMPOSE, COMPOSE_CPU)
    if config is None:
        pytest.skip("Compose v2 (`docker compose`) is not installed here; the merge above stands in for it")
    for name, service in config["services"].items():
        assert not gpu_devices(service), name


def test_legacy_docker_compose_refuses_the_cpu_override_loudly(compose_bin: str) -> None:
    """docker-compose 1.x cannot drop a reservation; it must fail on `!reset`, not start a GPU container."""
    result = run_compose(compose_bin, "-f", str(COMPOSE), "-f", str(COMPOSE_CPU), "config")
    if result.returncode == 0:  # a docker-compose that understands !reset: it must have applied it
        config = yaml.safe_load(result.stdout)
        assert not any(gpu_devices(service) for service in config["services"].values())
    else:
        assert "!reset" in result.stderr
