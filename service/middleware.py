"""ASGI middleware: request ids, metrics and access log, the optional API key, the upload byte limit, arrivals
(and clients that leave before their answer).

Plain ASGI classes rather than Starlette's ``BaseHTTPMiddleware``, which wraps every request in extra
tasks and streams: at a thousand small requests a second that overhead shows.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from service import metrics
from service.batcher import Arrivals
from service.logs import REQUEST_ID

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ARRIVAL_SCOPE_KEY = "dae.arrival"
CLIENT_GONE_SCOPE_KEY = "dae.client_gone"  # set when a batched request was cancelled because its client left
CLIENT_GONE_STATUS = 499  # recorded, never sent (there is no one to send it to): nginx's "client closed request"
# A batched request still unanswered this long after it arrived starts watching for its client to leave. Sooner
# would cost every digit a task; a photo's tiles take seconds on a CPU.
WATCH_AFTER_S = 0.25
_REQUEST_ID_PATTERN = re.compile(rb"[A-Za-z0-9._:-]{1,128}")

log = logging.getLogger("service")
access_log = logging.getLogger("service.access")


async def send_json_error(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    """The outermost layer: gives each request an id, counts and times it, logs it, and answers what escaped.

    The id is the client's ``X-Request-ID`` when it is a short token (letters, digits, ``-._:``), else a
    fresh one; it is set in ``service.logs.REQUEST_ID`` for every log record of the request and sent back
    in the response's ``X-Request-ID``. An exception nothing else handled becomes a logged 500 here, with
    that id in the answer, so that the client can quote it.
    """

    def __init__(self, app: ASGIApp, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log
        # The metrics' labelled children by (route, method, status): ``labels()`` checks and locks on every
        # call, a few microseconds a request; the set of keys is bounded by the routes and statuses.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _record(self, route: str, method: str, status: int, elapsed: float) -> None:
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                metrics.REQUESTS.labels(route, method, str(status)),
                metrics.REQUEST_SECONDS.labels(route),
            )
        series[0].inc()
        series[1].observe(elapsed)

    @staticmethod
    def _request_id(scope: Scope) -> str:
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _REQUEST_ID_PATTERN.fullmatch(value):
                    return str(value.decode("ascii"))
                break  # anything else (too long, spaces, newlines) could forge log lines: replace it
        # 128 random bits, as a uuid4 has, from the process's PRNG: an id needs to be unique, not secret,
        # and os.urandom (what uuid4 reads) is a system call per request.
        return f"{random.getrandbits(128):032x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = self._request_id(scope)
        token = REQUEST_ID.set(request_id)
        id_header = (b"x-request-id", request_id.encode("ascii"))
        status = 500  # what the client gets if the app raises before answering
        responded = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status = message["status"]
                responded = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
            if not responded and scope.get(CLIENT_GONE_SCOPE_KEY):
                status = CLIENT_GONE_STATUS
        except Exception as exc:
            log.error("unhandled error on %s %s", scope["method"], scope["path"], exc_info=exc)
            if not responded:
                detail = f"internal error ({type(exc).__name__}); the service logged it under request id {request_id}"
                await send_json_error(send_with_id, 500, detail)
        finally:
            elapsed = time.perf_counter() - started
            # The route's template, not the raw path: one series per route, whatever clients send.
            route = getattr(scope.get("route"), "path", "unmatched")
            self._record(route, scope["method"], status, elapsed)
            if self.access_log or status == 500:
                access_log.log(
                    logging.ERROR if status == 500 else logging.INFO,
                    "%s %s %d",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "latency_ms": round(elapsed * 1000.0, 3),
                        "client": _client(scope),
                    },
                )
            REQUEST_ID.reset(token)


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


class ApiKeyMiddleware:
    """401 unless ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` matches, except on open paths.

    Both sides are hashed before ``hmac.compare_digest`` so that the comparison takes the same time
    whatever the length or content of the key sent.
    """

    def __init__(self, app: ASGIApp, api_key: str, open_paths: frozenset[str], open_prefixes: tuple[str, ...]) -> None:
        self.app = app
        self._digest = hashlib.sha256(api_key.encode()).digest()
        self._open_paths = open_paths
        self._open_prefixes = open_prefixes

    def _given_key(self, scope: Scope) -> bytes | None:
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                return bytes(value)
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                return bytes(value[7:]).strip()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in self._open_paths or path.startswith(self._open_prefixes):
            await self.app(scope, receive, send)
            return
        given = self._given_key(scope)
        if given is not None and hmac.compare_digest(hashlib.sha256(given).digest(), self._digest):
            await self.app(scope, receive, send)
            return
        detail = "this route needs the API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        if given is not None:
            detail = "the API key sent is not the right one"
        await send_json_error(send, 401, detail, {"WWW-Authenticate": "Bearer"})


class PayloadTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes the limit. An ``HTTPException`` because FastAPI's body
    parser lets those through (any other error while parsing becomes its own 400)."""

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes``: at once from Content-Length, else as soon as the count passes it.

    The service's one check of the upload size (DAE_MAX_UPLOAD_BYTES counts the whole body: the images
    and the few hundred bytes of form around them), made before any of it is parsed.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self, n_bytes: int | None) -> str:
        size = "more than" if n_bytes is None else f"{n_bytes} bytes,"
        return f"the request body is {size} over the limit of {self.max_bytes} bytes (DAE_MAX_UPLOAD_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await send_json_error(send, 413, self._message(int(value)))
                return
        received = 0

        async def receive_counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise PayloadTooLarge(self._message(None))
            return message

        await self.app(scope, receive_counted, send)


class _ClientWatch:
    """Cancels a request's task when its client disconnects after sending the whole body and before the answer
    starts: a photo's tiles are seconds of forwards on a CPU, and a client that gave up (a closed tab, a timeout
    and a retry) must not leave them queued ahead of everyone else's. Watching takes a ``receive`` of its own,
    which an ASGI server answers with ``http.disconnect`` when the client leaves (Starlette's streaming responses
    listen the same way); it starts only once the app has read the body, so the two never wait on it at once."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self.gone = False
        task = asyncio.current_task()
        assert task is not None, "a _ClientWatch is made inside the request's coroutine"
        self._task = task  # the server's task for this request, where the app runs
        self._receive = receive
        self._send = send
        self._body_read = False
        self._answering = False
        self._watcher: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            self._body_read = True
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._answering = True
        await self._send(message)

    def _start(self) -> None:
        if self._answering:
            return
        if not self._body_read:  # still uploading: the app reads (and sees a disconnect) itself; look again later
            self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)
            return
        self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        message = await self._receive()
        if message["type"] == "http.disconnect" and not self._answering:
            self.gone = True
            self._task.cancel()

    def close(self) -> None:
        self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()


class ArrivalMiddleware:
    """Announces each request to a ``@batched`` route to the batchers the moment it arrives (``service.batcher``),
    and cancels it if its client leaves before the answer (``_ClientWatch``).

    A middleware rather than a dependency of the route: it runs before the routing and costs one set
    lookup, where a FastAPI dependency with clean-up costs tens of microseconds a request."""

    def __init__(
        self, app: ASGIApp, arrivals: Arrivals, paths: frozenset[str], patterns: tuple[re.Pattern[str], ...] = ()
    ) -> None:
        self.app = app
        self.arrivals = arrivals
        self.paths = paths
        self.patterns = patterns  # batched routes with parameters in their path: a regex match, after the lookup

    def _batched(self, path: str) -> bool:
        return path in self.paths or any(pattern.match(path) for pattern in self.patterns)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._batched(scope["path"]):
            await self.app(scope, receive, send)
            return
        token = self.arrivals.announce()
        scope[ARRIVAL_SCOPE_KEY] = token
        watch = _ClientWatch(receive, send)
        try:
            await self.app(scope, watch.receive, watch.send)
        except asyncio.CancelledError:
            if not watch.gone:
                raise  # the server's own cancellation (shutdown): not ours to swallow
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):  # Python 3.11+: the task was not cancelled for good
                task.uncancel()
            scope[CLIENT_GONE_SCOPE_KEY] = True
            log.info("the client of %s %s left before its answer; its work stops", scope["method"], scope["path"])
        finally:
            watch.close()
            token.done()
            self.arrivals.leave()
