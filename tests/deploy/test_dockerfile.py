"""The Dockerfile: hadolint-clean, multi-stage, two flavours, non-root, health-checked, and starting the
same ``dae-serve`` command that compose names and the tests launch."""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import entry_points

import pytest

from tests.deploy.conftest import (
    COMPOSE,
    DOCKERFILE,
    SERVE_PROGRAM,
    Instruction,
    dockerfile_instructions,
    exec_form,
    load_compose,
    normalized_serve_command,
    serve_command,
    stages,
)


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return dockerfile_instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def runtime(instructions: list[Instruction]) -> list[Instruction]:
    """The final stage: what `docker build` without --target produces."""
    return stages(instructions)[-1]


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [instruction for instruction in stage if instruction.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the runtime stage, found {len(found)}"
    return found[0]


def test_hadolint_passes_at_error_level(hadolint_bin: str) -> None:
    result = subprocess.run(
        [hadolint_bin, "--failure-threshold", "error", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_multi_stage_with_a_build_stage_and_a_runtime_stage(instructions: list[Instruction]) -> None:
    froms = [instruction.value for instruction in instructions if instruction.keyword == "FROM"]
    names = [value.split()[-1].lower() for value in froms if " as " in value.lower()]
    assert "build" in names and names[-1] == "runtime", froms
    runtime_copies = [i.value for i in stages(instructions)[-1] if i.keyword == "COPY"]
    assert any(value.startswith("--from=build") for value in runtime_copies), "the runtime copies the built venv"


def test_base_is_chosen_by_a_build_argument_cuda_by_default(instructions: list[Instruction]) -> None:
    global_args = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            global_args.append(instruction.value)
    assert "BASE=cuda" in global_args
    froms = [instruction.value for instruction in instructions if instruction.keyword == "FROM"]
    assert any(value.startswith("${CUDA_IMAGE}") or "nvidia/cuda" in value for value in froms)
    assert any("${BASE}" in value for value in froms), "one FROM selects the flavour by ${BASE}"
    stage_names = {value.split()[-1] for value in froms if " AS " in value.upper()}
    assert {"os-cuda", "os-cpu"} <= stage_names
    text = DOCKERFILE.read_text()
    assert "download.pytorch.org/whl/cpu" in text, "the CPU flavour installs CPU-only torch wheels"


def test_runtime_runs_as_a_non_root_user(runtime: list[Instruction]) -> None:
    user = only(runtime, "USER").value.split(":")[0]
    arg_defaults = dict(
        instruction.value.split("=", 1)
        for instruction in runtime
        if instruction.keyword == "ARG" and "=" in instruction.value
    )
    user = arg_defaults.get(user.strip("${}"), user)
    assert user not in ("root", "0", ""), f"USER {user}"


def test_runtime_exposes_the_port_and_checks_readiness(runtime: list[Instruction]) -> None:
    assert only(runtime, "EXPOSE").value.split() == ["8000"]
    healthcheck = only(runtime, "HEALTHCHECK").value
    command = exec_form(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert command[0] == "python" and "/readyz" in " ".join(command)
    assert not any("curl" in part or "wget" in part for part in command), "the image has neither"


def test_checkpoints_are_baked_in_where_the_service_looks(runtime: list[Instruction]) -> None:
    env = " ".join(instruction.value for instruction in runtime if instruction.keyword == "ENV")
    match = re.search(r"DAE_CHECKPOINT_DIR=(\S+)", env)
    assert match, "the runtime sets DAE_CHECKPOINT_DIR"
    copies = [instruction.value.split() for instruction in runtime if instruction.keyword == "COPY"]
    assert any(parts[-2:] == ["checkpoints", match.group(1)] for parts in copies)


def test_image_command_is_dae_serve_on_all_interfaces(runtime: list[Instruction]) -> None:
    command = exec_form(only(runtime, "CMD").value)
    assert command == [SERVE_PROGRAM, "--host", "0.0.0.0"]
    assert not [instruction for instruction in runtime if instruction.keyword == "ENTRYPOINT"], (
        "no ENTRYPOINT: the train service runs dae-train from the same image"
    )


def test_image_compose_and_tests_start_the_same_command(runtime: list[Instruction]) -> None:
    """Dockerfile CMD == compose api command == what the graceful-shutdown test launches (host/port aside)."""
    image = exec_form(only(runtime, "CMD").value)
    compose = load_compose(COMPOSE)["services"]["api"]["command"]
    tested = serve_command("127.0.0.1", 8123)
    assert compose == image
    assert normalized_serve_command(image) == normalized_serve_command(tested)
    installed = {script.name: script.value for script in entry_points(group="console_scripts")}
    assert installed.get(SERVE_PROGRAM) == "service.cli:main", "pip install . provides dae-serve"
