""".dockerignore: the build context holds what the Dockerfile copies and leaves out .venv, caches and data.

The patterns are evaluated here the way Docker does (Go's filepath.Match per path segment, ``**`` for
any number of segments, ``!`` to re-include, the last matching line wins, a match on a folder covers
everything in it), then applied to this checkout.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.deploy.conftest import DOCKERFILE, DOCKERIGNORE, dockerfile_instructions


class DockerIgnore:
    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str], str]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exception = line.startswith("!")
            pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
            self.rules.append((exception, re.compile(self._regex(pattern)), pattern))

    @staticmethod
    def _regex(pattern: str) -> str:
        out, i = "^", 0
        while i < len(pattern):
            ch = pattern[i]
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    i += 1
                out += ".*" if i >= len(pattern) else "(.*/)?"
                continue
            if ch == "*":
                out += "[^/]*"
            elif ch == "?":
                out += "[^/]"
            elif ch == "[":
                end = pattern.index("]", i)
                out += "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]"
                i = end
            else:
                out += re.escape(ch)
            i += 1
        return out + "$"

    def excluded(self, path: str) -> bool:
        """Docker's MatchesOrParentMatches: a rule matching the path or any folder above it applies."""
        parts = path.split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for exception, regex, _ in self.rules:
            if any(regex.match(candidate) for candidate in candidates):
                result = not exception
        return result

    def may_reinclude_below(self, folder: str) -> bool:
        """Whether an exception could bring back something inside an excluded folder (else skip walking it)."""
        for exception, _, pattern in self.rules:
            if exception and ("**" in pattern or pattern.startswith(folder + "/") or folder.startswith(pattern)):
                return True
        return False


@pytest.fixture(scope="module")
def ignore() -> DockerIgnore:
    return DockerIgnore(DOCKERIGNORE.read_text())


@pytest.fixture(scope="module")
def context_files(ignore: DockerIgnore) -> list[str]:
    """The files of this checkout that `docker build .` would send."""
    sent = []
    for root, folders, files in os.walk(REPO):
        relative_root = os.path.relpath(root, REPO)
        prefix = "" if relative_root == "." else relative_root + "/"
        folders[:] = [
            folder
            for folder in folders
            if not ignore.excluded(prefix + folder) or ignore.may_reinclude_below(prefix + folder)
        ]
        sent += [prefix + name for name in files if not ignore.excluded(prefix + name)]
    return sorted(sent)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".venv/lib/python3.11/site-packages/torch/__init__.py",
        "data/mnist/train-images-idx3-ubyte.gz",
        "cache/anything",
        ".git/HEAD",
        ".pytest_cache/v/cache/nodeids",
        ".ruff_cache/0.5.0/123",
        ".mypy_cache/3.11/models/__init__.data.json",
        ".hypothesis/examples/x",
        "models/__pycache__/checkpoint.cpython-311.pyc",
        "service/__pycache__/app.cpython-312.pyc",
        "training/study/__pycache__/x.cpython-311.pyc",
        "dae_service.egg-info/PKG-INFO",
        "build/lib/models/__init__.py",
        "checkpoints/conv-blind.resume.safetensors",
        "checkpoints/conv-blind.resume.meta",
        "tests/fixtures/mnist/train-images-idx3-ubyte.gz",
        "docs/report.md",
    ],
)
def test_left_out(ignore: DockerIgnore, path: str) -> None:
    assert ignore.excluded(path), f"{path} would be sent to the Docker builder"


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "models/__init__.py",
        "training/cli.py",
        "service/cli.py",
        "service/static/index.html",
        "checkpoints/mlp-gaussian.json",
        "checkpoints/mlp-gaussian.safetensors",
    ],
)
def test_sent(ignore: DockerIgnore, path: str) -> None:
    assert not ignore.excluded(path), f"{path} is needed by the build but left out of the context"


def test_everything_the_dockerfile_copies_is_in_the_context(ignore: DockerIgnore, context_files: list[str]) -> None:
    for instruction in dockerfile_instructions(DOCKERFILE.read_text()):
        if instruction.keyword != "COPY" or "--from=" in instruction.value:
            continue
        sources = [part for part in instruction.value.split() if not part.startswith("--")][:-1]
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert any(path == source or path.startswith(source + "/") for path in context_files), (
                f"COPY {source} (Dockerfile line {instruction.line}) finds nothing in the build context"
            )


def test_context_of_this_checkout_is_small(context_files: list[str]) -> None:
    size = sum((REPO / path).stat().st_size for path in context_files)
    assert not [path for path in context_files if path.startswith((".venv/", "data/", ".git/"))]
    assert size < 64 * 1024 * 1024, f"build context of {size / 2**20:.0f} MiB"
    assert all(
        Path(path).parts[0] in {"pyproject.toml", "README.md", "models", "training", "service", "checkpoints"}
        for path in context_files
    ), [path for path in context_files if "/" not in path]
