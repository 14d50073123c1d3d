"""Prometheus metrics: requests by route and status, latency, batch sizes, queue depth, inference time.

With several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set by ``dae-serve`` before they start)
every process writes its values to files in that folder and ``/metrics`` sums them, so one scrape
covers all workers whichever of them answers it.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter("dae_http_requests_total", "HTTP requests answered", ["route", "method", "status"])
REQUEST_SECONDS = Histogram(
    "dae_http_request_duration_seconds",
    "Time from request start to the end of the response",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
BATCH_SIZE = Histogram(
    "dae_batch_size",
    "Images per forward pass",
    ["model"],
    buckets=(1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512, 1024, 4096),
)
QUEUE_DEPTH = Gauge(
    "dae_queue_depth", "Requests waiting in the batcher's queue", ["model"], multiprocess_mode="livesum"
)
QUEUE_WAIT_SECONDS = Histogram(
    "dae_queue_wait_seconds",
    "Time a request waited in the queue before its batch started",
    ["model"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0),
)
INFERENCE_SECONDS = Histogram(
    "dae_inference_seconds",
    "Wall time of one batch in the inference thread (all its shape groups)",
    ["model"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0),
)
REJECTED = Counter("dae_batcher_rejected_total", "Requests refused because the queue was full", ["model"])
DECODER_FAILURES = Counter(
    "dae_decoder_failures_total",
    "Uploads whose decoder (format heic), or whose CMYK colour profile's conversion (icc), died or hung in its"
    " child process (service.decode_process): corrupt or hostile files",
    ["format", "failure"],
)
# One series per live worker process (its pid), so a scrape shows which workers it covers.
WORKER_UP = Gauge("dae_worker_up", "1 while this worker process serves", multiprocess_mode="liveall")
READY = Gauge("dae_ready", "1 once every model is loaded and warmed up", multiprocess_mode="livemin")


class BatcherMetrics:
    """The labelled children for one model, resolved once (``labels()`` per request costs a lookup)."""

    def __init__(self, model: str) -> None:
        self.batch_size = BATCH_SIZE.labels(model)
        self.queue_depth = QUEUE_DEPTH.labels(model)
        self.queue_wait = QUEUE_WAIT_SECONDS.labels(model)
        self.inference_seconds = INFERENCE_SECONDS.labels(model)
        self.rejected_full = REJECTED.labels(model)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def render() -> tuple[bytes, str]:
    """The exposition text (all workers' together in multiprocess mode) and its content type."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def worker_stopped() -> None:
    """Drop this process's live gauges from the shared files (multiprocess mode only)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(os.getpid())
