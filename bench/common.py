"""Helpers every benchmark shares: the device's name, one section of docs/benchmarks.md, the training command."""

from __future__ import annotations

import platform
import re
import sys
from pathlib import Path

import torch

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def train_command(args: list[str]) -> list[str]:
    """``dae-train ARGS`` as ``python -m training train ARGS``: dae-train without its console script, which a
    machine that runs the project from its checkout (the GPU check) lacks."""
    return [sys.executable, "-m", "training", "train", *args]


def device_description(device: str = "auto") -> str:
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"CUDA: {torch.cuda.get_device_name(0)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def write_section(heading: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the ``## heading`` section of the benchmarks file, leaving the others."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\nFigures measured by the scripts in `bench/`.\n"
    section = f"## {heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip() + "\n")


def publish(heading: str, text: str, write: bool = True) -> None:
    """Print a benchmark's figures and, when ``write`` (no ``--no-write``), put them in their section of the file."""
    print(text)
    if write:
        write_section(heading, text)
