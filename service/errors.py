"""The service's own errors: each carries the HTTP status it answers with and a detail saying what to fix.

The serving modules raise these without knowing about HTTP; ``service.app`` turns any of them into
``{"detail": ...}`` with ``status_code`` and ``headers``.
"""

from __future__ import annotations

RETRY_AFTER_S = 1


class ServiceError(Exception):
    """Base: a request that cannot be answered, with the status and the reason."""

    status_code = 500

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class BadImage(ServiceError):
    """The upload is empty, not an image, or corrupt."""

    status_code = 400


class BadForm(ServiceError):
    """The body is not a multipart form that can be parsed."""

    status_code = 400


class UnsupportedBody(ServiceError):
    """A body of a type that cannot carry an image (a form urlencoded)."""

    status_code = 415


class ClientGone(ServiceError):
    """The client left before its body was whole. No one reads the answer; its status is what the metrics and
    the access log count (nginx's 499, "client closed request"), not a 400 for a mistake nobody made."""

    status_code = 499


class UnknownModel(ServiceError):
    status_code = 404


class TooLarge(ServiceError):
    """Too many bytes, too many pixels, or too big for the device's memory."""

    status_code = 413


class InvalidField(ServiceError):
    """A field value the schema could not catch (for example too many files)."""

    status_code = 422


class Unavailable(ServiceError):
    """Not ready yet, or the queue is full: come back shortly."""

    status_code = 503

    def __init__(self, detail: str) -> None:
        super().__init__(detail, {"Retry-After": str(RETRY_AFTER_S)})


class DeadlineExceeded(ServiceError):
    status_code = 504


class InferenceFailed(ServiceError):
    """The model's forward pass raised on this input: a server fault, reported for this request only."""

    status_code = 500
