"""The Configuration tables document every DAE_ setting and every variable the compose files read.

They live in the README's Deployment and Configuration sections.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.settings import ENV_PREFIX, Settings
from tests.conftest import REPO
from tests.deploy.conftest import COMPOSE, COMPOSE_CPU, interpolated_names


def configuration_section() -> tuple[Path, str]:
    for path in (REPO / "README.md",):
        text = path.read_text() if path.exists() else ""
        match = re.search(r"^## Configuration\n(.*?)(?=^## |\Z)", text, re.M | re.S)
        if match:
            return path, match.group(1)
    pytest.fail("no '## Configuration' section in README.md", pytrace=False)


def documented_variables(section: str) -> set[str]:
    """First-column names of the section's tables."""
    return set(re.findall(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|", section, re.M))


def test_every_setting_is_documented() -> None:
    path, section = configuration_section()
    documented = documented_variables(section)
    settings = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    assert not settings - documented, f"{path.name}: undocumented settings {sorted(settings - documented)}"
    stale = {name for name in documented if name.startswith(ENV_PREFIX)} - settings
    assert not stale, f"{path.name}: documents settings that do not exist: {sorted(stale)}"


def test_every_compose_variable_is_documented() -> None:
    path, section = configuration_section()
    used = interpolated_names(COMPOSE.read_text()) | interpolated_names(COMPOSE_CPU.read_text())
    missing = used - documented_variables(section)
    assert not missing, f"{path.name}: compose reads {sorted(missing)} but the Configuration section omits them"


def test_documented_defaults_are_the_services() -> None:
    """The default column of each DAE_ row states the service's default (plain values only)."""
    _, section = configuration_section()
    for name, field in Settings.model_fields.items():
        default = field.default
        if field.default_factory is not None or default is None:
            continue
        row = re.search(r"^\|\s*`" + ENV_PREFIX + name.upper() + r"`\s*\|([^|]*)\|", section, re.M)
        assert row, name
        shown = row.group(1)
        expected = (
            str(default).lower()
            if isinstance(default, bool)
            else f"{default:g}"
            if isinstance(default, float)
            else str(default)
        )
        assert f"`{expected}`" in shown, (
            f"{ENV_PREFIX}{name.upper()}: documented default {shown.strip()!r}, service's {expected!r}"
        )
