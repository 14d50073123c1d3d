"""``dae-serve``: check the settings and checkpoints, then run uvicorn with one or more worker processes.

Flags override their ``DAE_`` environment variables by writing them, so each worker process (which
builds its app from the environment through ``create_app``) sees exactly what the command line said.
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from pydantic import ValidationError

from service.logs import log_config
from service.settings import ENV_PREFIX, Settings

log = logging.getLogger("service")

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when it is first imported


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="dae-serve",
        description="Serve the denoising autoencoders in a checkpoint folder over HTTP (demo page at /, API "
        "docs at /docs). Every flag is also a DAE_ environment variable; other settings (DAE_DEFAULT_MODEL, "
        "DAE_DEVICE, DAE_MAX_BATCH_SIZE, DAE_API_KEY...) are listed in service/settings.py.",
    )
    parser.add_argument("--host", help="address to listen on (DAE_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (DAE_PORT; default 8000)")
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="folder of checkpoints (DAE_CHECKPOINT_DIR; default: the shipped checkpoints/)",
    )
    parser.add_argument("--workers", type=int, help="worker processes sharing the port (DAE_WORKERS; default 1)")
    parser.add_argument("--device", help="auto, cpu or cuda (DAE_DEVICE; default auto)")
    parser.add_argument("--log-level", help="debug, info, warning... (DAE_LOG_LEVEL; default info)")
    return parser.parse_args(argv)


def apply_flags(args: argparse.Namespace) -> None:
    """Write each given flag to its DAE_ variable, the one channel that reaches every worker."""
    for name, value in vars(args).items():
        if value is not None:
            os.environ[ENV_PREFIX + name.upper()] = str(Path(value).resolve() if name == "checkpoint_dir" else value)


def verify_checkpoints(settings: Settings) -> None:
    """Load every checkpoint once on the CPU before any worker starts.

    A worker that fails its start-up would be restarted by uvicorn's supervisor again and again; failing
    here instead stops ``dae-serve`` with one line naming the file.
    """
    import torch

    from service.registry import load_models

    load_models(settings.checkpoint_dir, torch.device("cpu"), settings.skip_bad_checkpoints)


def prepare_multiprocess_metrics(workers: int) -> str | None:
    """With several workers, give prometheus_client a fresh shared folder; returns it if we made it."""
    if workers < 2:
        return None
    existing = os.environ.get(_MULTIPROC_ENV)
    if existing:
        folder = Path(existing)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):  # values of an earlier run would be summed with ours
            stale.unlink()
        return None
    created = tempfile.mkdtemp(prefix="dae-metrics-")
    os.environ[_MULTIPROC_ENV] = created
    return created


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    apply_flags(args)
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{ENV_PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        print(f"dae-serve: bad setting: {problems}", file=sys.stderr)
        return 2
    logging_config = log_config(settings.log_level, settings.log_format)
    logging.config.dictConfig(logging_config)
    # Before anything imports prometheus_client: it picks its storage when first imported.
    created_dir = prepare_multiprocess_metrics(settings.workers)
    try:
        from service.registry import StartupError

        try:
            verify_checkpoints(settings)
        except StartupError as exc:
            print(f"dae-serve: {exc}", file=sys.stderr)
            return 2
        import uvicorn

        # uvicorn shuts down gracefully on SIGTERM and SIGINT, then raises the signal again for the handler
        # that was there before it. Make that a clean exit, so that `docker stop` and Ctrl+C end with
        # status 0 (an orchestrator reads anything else as a failure) and no traceback.
        signal.signal(signal.SIGTERM, _exit_cleanly)
        signal.signal(signal.SIGINT, _exit_cleanly)
        uvicorn.run(
            "service.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_config=logging_config,
            log_level=settings.log_level,  # lower-cased by Settings
            timeout_keep_alive=settings.keep_alive_s,
            access_log=False,  # the service's own access log (DAE_ACCESS_LOG) carries the request id and latency
        )
    finally:
        if created_dir:
            shutil.rmtree(created_dir, ignore_errors=True)
    return 0
