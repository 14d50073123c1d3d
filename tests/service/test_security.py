"""Hostile input and the service's guard rails: nothing unpickled, limits enforced before the work they
guard, model names kept away from the filesystem, the API key compared in constant time, CORS off unless
configured, a request id on every answer and in the logs, JSON log lines without uploaded bytes."""

from __future__ import annotations

import base64
import hmac
import io
import json
import logging
import re
import socket
import subprocess
import sys
import threading
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import ImageFile

from service import middleware
from service.logs import JsonFormatter, TextFormatter
from tests.conftest import REPO
from tests.service.conftest import FIXED_SIZE_MODEL, AppClient, png_bytes, upload

# Anything that turns bytes into Python objects by running their instructions.
UNPICKLING = re.compile(
    r"\b(import|from) (c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b"
    r"|\bpickle\.loads?\(|\btorch\.load\(|\ballow_pickle\s*=\s*True|\bread_pickle\(|\bweights_only\s*=\s*False"
    r"|\bUnpickler\b|\byaml\.load\((?![^)]*SafeLoader|[^)]*Loader=ComposeLoader)"
)
SHIPPED_CODE = ("models", "training", "service", "bench")


def test_nothing_in_the_shipped_code_unpickles() -> None:
    found = []
    for package in SHIPPED_CODE:
        for path in sorted((REPO / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if UNPICKLING.search(line):
                    found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "code that can unpickle:\n" + "\n".join(found)


def shipped_checkpoint_files() -> list[Path]:
    """The files of checkpoints/ that ship: git's list where there is one (training leaves resume files)."""
    listed = subprocess.run(["git", "ls-files", "checkpoints"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout.strip():
        return [REPO / line for line in listed.stdout.splitlines()]
    return [path for path in (REPO / "checkpoints").iterdir() if path.is_file()]


def test_every_shipped_checkpoint_file_is_json_or_safetensors() -> None:
    """Nothing a loader could unpickle: model cards are JSON, weights are safetensors (a JSON header, raw tensors)."""
    for path in shipped_checkpoint_files():
        if path.suffix == ".sh":
            continue
        data = path.read_bytes()
        if path.suffix == ".safetensors":
            header_length = int.from_bytes(data[:8], "little")
            assert isinstance(json.loads(data[8 : 8 + header_length]), dict), path
        else:
            assert path.suffix == ".json" and isinstance(json.loads(data), dict), f"{path.name}: not a JSON model card"


def test_the_unpickling_check_catches_what_it_looks_for() -> None:
    for line in ("import pickle", "state = torch.load(path)", "np.load(f, allow_pickle=True)", "from joblib import x"):
        assert UNPICKLING.search(line), line
    assert not UNPICKLING.search("from safetensors.torch import load")


def test_the_byte_limit_stops_a_body_while_it_is_read(make_client: Any) -> None:
    """A chunked upload with no Content-Length is refused once the count passes the limit, long before
    the client has sent it all."""
    client = make_client(max_upload_bytes=100_000)
    chunk = b"\0" * 16384
    total_chunks = 4096  # 64 MiB on offer
    sent = 0

    async def endless_upload() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for _ in range(total_chunks):
            sent += 1
            yield chunk

    response = client.post(
        "/denoise", content=endless_upload(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 413
    assert "100000" in response.json()["detail"]
    allowed_chunks = 100_000 // len(chunk) + 2
    assert sent <= allowed_chunks, f"read {sent} chunks of {len(chunk)} bytes before refusing"


def test_a_declared_length_over_the_limit_is_refused_before_any_body_is_sent(make_server: Any) -> None:
    server = make_server(max_upload_bytes=100_000)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(
            b"POST /denoise HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 10000000000\r\n\r\n"
        )  # ...and not one byte of the body
        answer = connection.recv(65536).decode("latin-1")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert "DAE_MAX_UPLOAD_BYTES" in answer


def _png_bomb(side: int) -> bytes:
    """A valid grayscale PNG of side×side black pixels: a few kB that inflate to side² bytes."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + tag + body + zlib.crc32(tag + body).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    rows = zlib.compress(b"\0" * ((side + 1) * side), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_the_pixel_limit_refuses_a_decompression_bomb_before_decoding_it(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(max_image_pixels=1_000_000)
    bomb = _png_bomb(3000)  # 9 MP behind about 9 kB
    assert len(bomb) < 20_000
    decoded = []
    real_load = ImageFile.ImageFile.load

    def spying_load(self: ImageFile.ImageFile) -> Any:
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spying_load)
    for route, fields in (("/denoise", {}), ("/corrupt", {"noise": "gaussian"})):
        response = client.post(route, files=upload(bomb), data=fields)
        assert response.status_code == 413, response.text
        assert "3000×3000" in response.json()["detail"] and "DAE_MAX_IMAGE_PIXELS" in response.json()["detail"]
    assert decoded == [], "pixels were decoded before the limit was checked"


class FileAccessSpy:
    """Records every audited file operation (open, listdir, stat-like...) naming ``marker``, from any thread."""

    def __init__(self) -> None:
        self.marker = ""
        self.events: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.marker or not event.startswith(("open", "os.", "shutil.", "glob.", "pathlib.")):
            return
        text = " ".join(str(arg) for arg in args)
        if self.marker in text:
            with self._lock:
                self.events.append((event, text))


_SPY = FileAccessSpy()
sys.addaudithook(_SPY.hook)  # audit hooks cannot be removed; this one does nothing while its marker is empty


@pytest.mark.parametrize(
    "name",
    [
        "../../../../etc/passwd-{m}",
        "/etc/{m}",
        "..\\..\\{m}",
        f"{FIXED_SIZE_MODEL}/../../{{m}}",
        "{m}.json",
        "%2e%2e%2f{m}",
        "{m}" + "x" * 5000,
    ],
)
def test_a_model_name_never_touches_the_filesystem(client: AppClient, digit: bytes, name: str) -> None:
    marker = "zzprobe"
    model = name.format(m=marker)
    _SPY.marker, _SPY.events = marker, []
    try:
        response = client.post("/denoise", files=upload(digit), data={"model": model})
        batch = client.post("/denoise/batch", files=upload(digit), data={"model": model})
    finally:
        _SPY.marker = ""
    assert response.status_code == 404 and batch.status_code == 404
    assert "loaded:" in response.json()["detail"]
    assert _SPY.events == [], f"the model name reached the filesystem: {_SPY.events[:3]}"


def test_the_file_access_spy_sees_an_open() -> None:
    _SPY.marker, _SPY.events = "zzprobe", []
    try:
        with pytest.raises(OSError), Path("/nonexistent/zzprobe").open():
            pass
    finally:
        _SPY.marker = ""
    assert _SPY.events and _SPY.events[0][0] == "open"


def test_the_api_key_is_compared_in_constant_time(
    make_client: Any, digit: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the length of the key sent, what is compared is two SHA-256 digests, by hmac.compare_digest."""
    client = make_client(api_key="the-real-key-0123456789")
    compared: list[tuple[int, int]] = []
    real_compare = hmac.compare_digest

    def spying_compare(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real_compare(a, b)

    monkeypatch.setattr(middleware.hmac, "compare_digest", spying_compare)
    for key in ("x", "the-real-key-012345678", "the-real-key-0123456789" + "9" * 1000):
        assert client.get("/models", headers={"X-API-Key": key}).status_code == 401
    assert client.get("/models", headers={"Authorization": "Bearer the-real-key-0123456789"}).status_code == 200
    assert compared == [(32, 32)] * 4


def test_cors_is_off_unless_origins_are_configured(client: AppClient, make_client: Any) -> None:
    preflight = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.get("/models", headers={"Origin": "https://a.example"}).headers
    answer = client.request("OPTIONS", "/denoise", headers=preflight)
    assert answer.status_code == 405 and "access-control-allow-origin" not in answer.headers

    configured = make_client(cors_origins=["https://app.example"])
    allowed = configured.request("OPTIONS", "/denoise", headers={**preflight, "Origin": "https://app.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    refused = configured.request("OPTIONS", "/denoise", headers=preflight)
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    simple = configured.get("/models", headers={"Origin": "https://app.example"})
    assert simple.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    # A page on that origin posts a photo as the body and reads every figure of the image answer from its headers.
    photo = png_bytes(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    image_preflight = {**preflight, "Origin": "https://app.example", "Access-Control-Request-Headers": "content-type"}
    assert configured.request("OPTIONS", "/denoise", headers=image_preflight).status_code == 200
    answer = configured.post(
        "/denoise",
        params={"noise": "gaussian", "seed": "1"},
        content=photo,
        headers={"Origin": "https://app.example", "Content-Type": "image/png", "Accept": "image/png"},
    )
    assert answer.status_code == 200
    exposed = {name.strip() for name in answer.headers["access-control-expose-headers"].lower().split(",")}
    carried = {name for name in answer.headers if name.startswith("x-")}
    assert {"x-model", "x-noisy-psnr-db", "x-denoised-psnr-db", "x-noise-level"} <= carried <= exposed


def test_every_answer_carries_a_request_id(make_client: Any, digit: bytes) -> None:
    client = make_client(api_key="k", max_upload_bytes=1000)
    key = {"X-API-Key": "k"}
    answers = [
        client.get("/healthz"),
        client.get("/static/app.js"),
        client.get("/models"),  # 401
        client.get("/models", headers=key),
        client.post("/denoise", files=upload(b"x" * 5000), headers=key),  # 413 from the middleware
        client.post("/denoise", files=upload(b"not an image"), headers=key),  # 400
        client.post("/denoise", data={"level": "2"}, headers=key),  # 422
        client.get("/no-such-route", headers=key),  # 404
    ]
    ids = [answer.headers.get("x-request-id") for answer in answers]
    assert all(ids), [(a.request.url.path, a.status_code) for a, i in zip(answers, ids, strict=True) if not i]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i or "") for i in ids)
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    "sent,kept",
    [("trace-7f3a.b:c_d-9", True), ("a b", False), ("x" * 129, False), ("id;rm -rf", False), ('"}{', False)],
)
def test_a_clients_request_id_is_kept_only_when_it_is_a_plain_token(client: AppClient, sent: str, kept: bool) -> None:
    answered = client.get("/healthz", headers={"X-Request-ID": sent}).headers["x-request-id"]
    assert (answered == sent) is kept
    if not kept:
        assert re.fullmatch(r"[0-9a-f]{32}", answered)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The service's log records, formatted as dae-serve writes them (JSON lines), at INFO and above."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("service")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def test_access_log_lines_are_json_with_level_latency_and_the_request_id_and_no_upload_bytes(
    make_client: Any, digit: bytes, json_log: io.StringIO
) -> None:
    client = make_client(access_log=True, api_key="key-that-must-not-be-logged")
    secret = b"SECRET-PIXELS-" * 8
    auth = {"Authorization": "Bearer key-that-must-not-be-logged"}
    requests = [
        client.post("/denoise", files=upload(digit + secret), data={"model": FIXED_SIZE_MODEL}, headers=auth),
        client.post("/denoise", files=upload(secret), headers=auth),  # 400: not an image
        client.post("/corrupt", files=upload(secret), data={"noise": "nope"}, headers=auth),  # 422
        client.post("/denoise/batch", files=upload(secret), headers={"X-API-Key": "wrong"}),  # 401
    ]
    assert [r.status_code for r in requests] == [200, 400, 422, 401]
    text = json_log.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    by_id = {line.get("request_id"): line for line in lines if line["logger"] == "service.access"}
    for response in requests:
        line = by_id[response.headers["x-request-id"]]
        assert line["level"] == "info" and line["status"] == response.status_code
        assert line["method"] == "POST" and line["path"] == response.request.url.path
        assert isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0
        assert line["time"].endswith("+00:00")
    for forbidden in (b"SECRET-PIXELS", base64.b64encode(secret)[:40], digit[:64], b"key-that-must-not-be-logged"):
        assert forbidden.decode("latin-1") not in text, f"{forbidden[:20]!r} reached the log"


def test_text_log_lines_carry_the_request_id_too() -> None:
    record = logging.LogRecord("service", logging.WARNING, __file__, 1, "queue full", None, None)
    record.request_id = "abc123"
    assert TextFormatter().format(record) == "WARNING:     service: queue full [request abc123]"


def test_dae_serve_configures_json_lines_for_its_own_and_uvicorns_loggers() -> None:
    """The logging set-up dae-serve applies in each worker, in a fresh interpreter (it is process-wide)."""
    script = (
        "import logging, logging.config\n"
        "from service.logs import REQUEST_ID, install_request_id_factory, log_config\n"
        "logging.config.dictConfig(log_config('info', 'json'))\n"
        "install_request_id_factory()\n"
        "REQUEST_ID.set('r-1')\n"
        "logging.getLogger('service.access').info('POST /denoise 200', extra={'latency_ms': 2.5, 'status': 200})\n"
        "logging.getLogger('uvicorn.error').info('Uvicorn running')\n"
        "logging.getLogger('uvicorn.access').info('must not appear')\n"
        "logging.getLogger('service').debug('below the level')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO, check=True
    )
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    expected = [("service.access", "info"), ("uvicorn.error", "info")]
    assert [(line["logger"], line["level"]) for line in lines] == expected
    assert lines[0]["latency_ms"] == 2.5 and lines[0]["status"] == 200
    assert all(line["request_id"] == "r-1" for line in lines)
