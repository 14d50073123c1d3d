"""Where each model's forward passes run: the device, the precision, and the event loop, a thread or a child process.

Decided here once, at start-up, from the settings, the machine and the model; nothing else in the
service makes these choices. The rules (their costs measured in docs/benchmarks.md, "Serving costs" and
"Serving"):

- **backend** (``DAE_INFERENCE_BACKEND=auto``):
  - a convolutional model on a CPU with two or more cores per worker runs in the worker's **child
    process** (``service.inference_process``): in a thread of the server its forty-odd operators would
    take turns with the event loop at one GIL;
  - except the photo model (``DAE_DEFAULT_PHOTO_MODEL``), which runs in **inference threads**: on a photo
    each operator takes milliseconds, so the turns at the GIL cost little, and single-threaded forwards
    side by side, one per core, do about twice what one forward on every core does (two threads scale
    poorly over one photo; docs/benchmarks.md, "Serving: photos");
  - a model with no convolution (the fixed-size MLPs) on a CPU runs on the **event loop**: its forward is a
    fraction of a millisecond, a few times the hop to a thread and back ("Serving costs"), and in a thread it
    would take turns with the event loop at the GIL anyway: on the loop the service answered 1.6× the requests
    at one connection and 1.13× at 32 ("Serving", `service, threads`). The batcher lets the loop turn before
    each such forward (``DynamicBatcher._look_around``), so that requests that came in together share it;
  - anything else, and everything on CUDA (one stream keeps one worker's kernels in order), runs in
    **inference threads** of the worker.
- **precision** (``DAE_INFERENCE_DTYPE=auto``): bfloat16 for a convolutional model on a CPU with native
  bf16 (faster for the U-Net, within 0.1 dB: tests/service/test_precision.py), float32 elsewhere:
  autocast casts the weights on every call, which costs an MLP more than its whole forward.
- **batch pixels** (``DAE_MAX_BATCH_PIXELS=0``): on a CPU a forward holds at most 65,536 pixels, all 32
  digits of a full batch but only one 256×256 photo: past about 128×128 a batch costs more per image
  than single images do (the U-Net's activations leave the caches: 30 ms for one 256×256 photo, 46 ms
  per photo in a batch of 8, docs/benchmarks.md), so photos and tiles share forwards only on CUDA,
  where a batch of 8 Mpixels is what keeps the GPU busy.
- **threads**: the child gets every core but the event loop's for one forward's intra-op threads, with
  two batches in flight (one computing, the next ready behind it). Inference threads run
  single-threaded forwards side by side, one per core, at most four (past that the batches get too
  small). A request alone in the worker gets every core (``DynamicBatcher``'s ``run_alone``), and if its
  model is in the child it does not go there at all: it runs on the event loop, as the naive
  per-request server would, since the loop has nothing else to do and the hop to the child and back cost
  a quarter of the throughput at one connection on a 2-core VM.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from models.device import cpu_has_native_bf16, is_convolutional, resolve_device
from service.settings import Settings

Backend = Literal["loop", "thread", "process"]
CPU_BATCH_PIXELS = 1 << 16
CUDA_BATCH_PIXELS = 1 << 23


def _cgroup_cpu_limit() -> float | None:
    """The CPU quota of this container (cgroup v2, else v1) in cores, or None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 else None
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a container's CPU limit (``--cpus``),
    which ``os.cpu_count()`` ignores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    return max(1, min(cores, math.ceil(limit))) if limit else cores


def serving_dtype(requested: str, device: torch.device, model: nn.Module) -> torch.dtype:
    """The precision to serve ``model`` in (see the module's docstring for ``auto``)."""
    if requested == "float32":
        return torch.float32
    if requested == "bfloat16":
        return torch.bfloat16
    if requested != "auto":
        raise ValueError(f"unknown inference dtype {requested!r}; use auto, float32 or bfloat16")
    native = device.type == "cpu" and is_convolutional(model) and cpu_has_native_bf16()
    return torch.bfloat16 if native else torch.float32


def serving_backend(
    requested: str, device: torch.device, model: nn.Module, cores: int, serves_photos: bool = False
) -> Backend:
    """Where ``model``'s forwards run (see the module's docstring for ``auto``); never a child on CUDA."""
    if device.type == "cuda":
        return "thread"
    if requested == "auto":
        if not is_convolutional(model):
            return "loop"
        return "process" if cores >= 2 and not serves_photos else "thread"
    if requested in ("loop", "thread", "process"):
        return requested  # type: ignore[return-value]  # checked just above
    raise ValueError(f"unknown inference backend {requested!r}; use auto, loop, thread or process")


@dataclass(frozen=True)
class Placement:
    """Where one model's forwards run."""

    device: torch.device
    dtype: torch.dtype
    backend: Backend


@dataclass(frozen=True)
class WorkerPlan:
    """Every model's placement in one worker process, and the threads its forwards get."""

    device: torch.device
    placements: dict[str, Placement]
    inference_threads: int  # batches handed to forwards at once (threads that compute, or wait on the child)
    batch_pixels: int  # most pixels in one forward
    torch_threads: int  # intra-op threads of a forward in this process
    child_torch_threads: int  # intra-op threads of a forward in the child process
    alone_torch_threads: int  # intra-op threads of a forward for a request alone in the worker

    @property
    def in_child(self) -> list[str]:
        return [name for name, placement in self.placements.items() if placement.backend == "process"]


def plan_worker(settings: Settings, models: Mapping[str, nn.Module], cores: int | None = None) -> WorkerPlan:
    """Place every model of one worker; ``cores`` defaults to this worker's share of ``available_cores()``."""
    device = resolve_device(settings.device)
    cores = max(1, (available_cores() if cores is None else cores) // settings.workers)
    placements = {
        name: Placement(
            device,
            serving_dtype(settings.inference_dtype, device, model),
            serving_backend(settings.inference_backend, device, model, cores, name == settings.default_photo_model),
        )
        for name, model in models.items()
    }
    child = any(placement.backend == "process" for placement in placements.values())
    if child:
        threads = settings.inference_threads or 2
        child_threads = settings.torch_threads or max(1, cores - 1)
        # Forwards in this process's inference threads (the photo model's) share the same cores, side by side.
        torch_threads = settings.torch_threads or max(1, (cores - 1) // threads)
    else:
        threads = settings.inference_threads or (1 if device.type == "cuda" else min(cores, 4))
        torch_threads = child_threads = settings.torch_threads or max(1, cores // threads)
    alone_threads = settings.torch_threads or cores
    batch_pixels = settings.max_batch_pixels or (CUDA_BATCH_PIXELS if device.type == "cuda" else CPU_BATCH_PIXELS)
    return WorkerPlan(device, placements, threads, batch_pixels, torch_threads, child_threads, alone_threads)
