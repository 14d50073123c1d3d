"""The service's settings: one pydantic-settings class, read from ``DAE_`` environment variables.

``dae-serve``'s flags write the same variables, so a value reaches every worker process the same way
whether it came from a flag or from the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "DAE_"


def shipped_checkpoint_dir() -> Path:
    """The repository's ``checkpoints/`` beside the package, else ``./checkpoints`` (an installed copy)."""
    beside_package = Path(__file__).resolve().parents[1] / "checkpoints"
    return beside_package if beside_package.is_dir() else Path("checkpoints").resolve()


class Settings(BaseSettings):
    """Everything an operator can tune; each field is also the environment variable ``DAE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    checkpoint_dir: Path = Field(default_factory=shipped_checkpoint_dir, description="folder of *.json model cards")
    default_model: str = Field(
        default="conv-blind", description="model for a 28×28 image when a request names none (the digit model)"
    )
    default_photo_model: str = Field(
        default="photo-blind",
        description="model for any other image when a request names none; when it is not loaded, the default model",
    )
    device: str = Field(default="auto", description="auto, cpu or cuda (cuda:N)")
    inference_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="forward precision; auto: bfloat16 for conv models on a CPU with native bf16, else float32",
    )
    max_batch_size: int = Field(default=32, ge=1, le=4096, description="most images in one forward pass")
    max_batch_pixels: int = Field(
        default=0,
        ge=0,
        description="most pixels in one forward pass (photos and tiles count theirs); 0 picks from the device",
    )
    tile_size: int = Field(
        default=512, ge=16, le=4096, description="side of the tiles a larger image is cut into for a model of any size"
    )
    tile_overlap: int = Field(default=32, ge=0, le=1024, description="pixels that neighbouring tiles share")
    max_batch_delay_ms: float = Field(
        default=5.0, ge=0, le=10_000, description="longest a batch waits for requests already on their way"
    )
    max_queue_size: int = Field(default=512, ge=1, description="requests waiting per model before 503")
    request_timeout_s: float = Field(default=30.0, gt=0, description="deadline from enqueue to answer (504 after)")
    # Longer than the idle expiry of the clients and proxies in front (httpx 5 s, Chrome 10 s, nginx's upstream
    # keepalive 60 s): the side that closes an idle connection first must be the client. When the server does,
    # a request the client sends on that connection at the same moment is lost to a reset (uvicorn's default of
    # 5 s met httpx's 5 s in tests/service/test_load.py: a rare ReadError; with 1 s, about one in a thousand).
    keep_alive_s: int = Field(
        default=75, ge=1, le=3600, description="seconds an idle HTTP keep-alive connection stays open"
    )
    max_upload_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1,
        description="most bytes of one request body (the images and the form around them)",
    )
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
    inference_backend: Literal["auto", "loop", "thread", "process"] = Field(
        default="auto",
        description="where CPU forwards run: the event loop, inference threads, or a child process per worker; "
        "auto: MLPs on the loop, conv models in the child with 2+ cores (service/placement.py)",
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

    @model_validator(mode="after")
    def _overlap_within_tile(self) -> Settings:
        if self.tile_overlap >= self.tile_size // 2:
            raise ValueError(f"tile_overlap ({self.tile_overlap}) must be under half the tile_size ({self.tile_size})")
        return self

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
