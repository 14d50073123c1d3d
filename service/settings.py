"""The service's settings: one pydantic-settings class, read from ``DAE_`` environment variables.

``dae-serve``'s flags write the same variables, so a value reaches every worker process the same way
whether it came from a flag or from the environment.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "DAE_"


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


def shipped_checkpoint_dir() -> Path:
    """The repository's ``checkpoints/`` beside the package, else ``./checkpoints`` (an installed copy)."""
    beside_package = Path(__file__).resolve().parents[1] / "checkpoints"
    return beside_package if beside_package.is_dir() else Path("checkpoints").resolve()


class Settings(BaseSettings):
    """Everything an operator can tune; each field is also the environment variable ``DAE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    checkpoint_dir: Path = Field(default_factory=shipped_checkpoint_dir, description="folder of *.json model cards")
    default_model: str = Field(default="conv-blind", description="model used when a request names none")
    device: str = Field(default="auto", description="auto, cpu or cuda (cuda:N)")
    inference_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="forward precision; auto: bfloat16 for conv models on a CPU with native bf16, else float32",
    )
    max_batch_size: int = Field(default=32, ge=1, le=4096, description="most images in one forward pass")
    max_batch_delay_ms: float = Field(
        default=5.0, ge=0, le=10_000, description="longest a batch waits for requests already on their way"
    )
    max_queue_size: int = Field(default=512, ge=1, description="requests waiting per model before 503")
    request_timeout_s: float = Field(default=30.0, gt=0, description="deadline from enqueue to answer (504 after)")
    max_upload_bytes: int = Field(default=16 * 1024 * 1024, ge=1, description="most bytes one request may upload")
    max_image_pixels: int = Field(default=2048 * 2048, ge=1, description="most pixels an image may declare")
    max_batch_files: int = Field(default=64, ge=1, description="most images in one /denoise/batch request")
    api_key: SecretStr | None = Field(default=None, description="when set, required on every API route")
    skip_bad_checkpoints: bool = Field(default=False, description="skip (warn) instead of refusing to start")
    workers: int = Field(default=1, ge=1, le=64, description="worker processes sharing the port")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="origins allowed by CORS, comma-separated"
    )
    inference_backend: Literal["auto", "process", "thread"] = Field(
        default="auto",
        description="where CPU forwards run: a child process per worker, or threads; auto: process with 2+ cores",
    )
    inference_threads: int = Field(
        default=0, ge=0, le=64, description="batches in flight at once per worker; 0 picks from backend, device, cores"
    )
    torch_threads: int = Field(
        default=0, ge=0, le=256, description="intra-op threads of each forward pass; 0 picks from cores"
    )
    access_log: bool = Field(
        default=False, description="a log line per request with its id, status and latency (off: it costs throughput)"
    )
    log_level: str = "info"
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one JSON object per line (for log collectors); text: plain lines"
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.lower() not in ("trace", "debug", "info", "warning", "error", "critical"):
            raise ValueError(f"unknown log level {value!r}: use debug, info, warning or error")
        return value.lower()

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        # DAE_API_KEY= (set but empty) must not mean "the empty string is the key".
        return None if value == "" else value

    def inference_plan(self, device_type: str) -> InferencePlan:
        """Where this worker's forward passes run, how many batches are in flight, and their torch threads.

        On a CPU with at least two cores for this worker, in a child process (``service.inference_process``
        says why): one forward computing and the next batch queued behind it, with every core but the
        event loop's for its intra-op threads. With one core there is nothing to run side by side, and on
        CUDA one worker's kernels stay in order on one stream: both use inference threads in the worker.
        Threads on a CPU run single-threaded forwards side by side, one per core: small images
        parallelise poorly inside one convolution, and OpenMP's teams stall at every barrier when the
        event loop takes back a core. Past four forwards at once the batches get too small; the rest of
        the cores go to intra-op threads.
        """
        cores = max(1, available_cores() // self.workers)
        backend = self.inference_backend
        if backend == "auto":
            backend = "process" if cores >= 2 else "thread"
        if backend == "process" and device_type == "cpu":
            return InferencePlan("process", self.inference_threads or 2, self.torch_threads or max(1, cores - 1))
        forwards = self.inference_threads or (1 if device_type == "cuda" else min(cores, 4))
        return InferencePlan("thread", forwards, self.torch_threads or max(1, cores // forwards))


@dataclass(frozen=True)
class InferencePlan:
    """``Settings.inference_plan``'s answer for one worker process."""

    backend: Literal["process", "thread"]
    in_flight: int  # batches handed to the forwards at once (inference threads)
    torch_threads: int  # intra-op threads of each forward
