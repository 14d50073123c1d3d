"""Logging: one JSON object per line (or plain text), each record carrying the id of the request it served.

The request id lives in a context variable that ``RequestContextMiddleware`` sets for the duration of a
request; a log-record factory copies it onto every record created in that context, so any logger
(``service.*``, uvicorn's, a library's) gets it without passing it along. Records never carry uploaded
bytes: the service logs sizes, names and statuses, not payloads.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
from typing import Any, Literal

LogFormat = Literal["json", "text"]

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("dae_request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and goes into the JSON
# (except uvicorn's "color_message", an ANSI-coloured copy of the message).
_STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "request_id", "taskName", "color_message"}
)
_previous_factory: Any = None


def install_request_id_factory() -> None:
    """Make every new LogRecord carry ``request_id`` (None outside a request); idempotent."""
    global _previous_factory
    if _previous_factory is not None:
        return
    _previous_factory = logging.getLogRecordFactory()
    previous = _previous_factory

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = previous(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        return record

    logging.setLogRecordFactory(factory)


class JsonFormatter(logging.Formatter):
    """A record → one line of JSON: time, level, logger, message, request_id, the ``extra`` fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_") and key not in entry:
                entry[key] = value if isinstance(value, str | int | float | bool | None) else repr(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """uvicorn-like plain lines, with the request id in brackets when there is one."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s:     %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return line if request_id is None else f"{line} [request {request_id}]"


def log_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn and the service alike, applied in every worker process.

    uvicorn's own per-request access log stays off: the service writes its own (``DAE_ACCESS_LOG``), with
    the request id and the latency.
    """
    formatter = {"()": "service.logs.JsonFormatter"} if log_format == "json" else {"()": "service.logs.TextFormatter"}
    handler = {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "loggers": {
            "service": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
        "root": {"handlers": ["default"], "level": "WARNING"},
    }
