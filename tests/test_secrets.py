"""An API key never shows: not in logs (any logger, DEBUG), events, errors, reprs or storage.

Requests go over a real loopback socket through httpx's own client, so httpx's and
httpcore's logging is exercised too (httpx logs full URLs; our filter masks them).
"""

from __future__ import annotations

import base64
import logging
import os
import pathlib
import socket
import typing

import httpx
import pytest
from _modes import by_mode, mode_fixture  # noqa: F401 - fixtures: `mode` and `anyio_backend`
from _servers import Receive, Scope, Send, ServerThread

from ratelimit_client import (
    AsyncRateLimitTransport,
    Event,
    MemoryBackend,
    RateLimitTransport,
    RequestFailed,
    RetryPolicy,
)
from ratelimit_client._events import RedactingFilter

pytestmark = pytest.mark.anyio

SECRET = "wandbkey0123456789SECRETabcdef"
FORMS = ["bearer", "basic", "query", "userinfo", "explicit"]
POLICY = RetryPolicy(backoff_base=0.001, backoff_max=0.002, throttle_attempts=2, failure_attempts=2)


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    """/ok answers 200; /throttled 429 with a short Retry-After; /broken 503."""
    while (await receive()).get("more_body"):
        pass
    status, headers = {"/throttled": (429, [(b"retry-after", b"0.01")]), "/broken": (503, [])}.get(
        scope["path"], (200, [])
    )
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: connecting is refused


def _request_args(form: str, base: str) -> tuple[str, dict[str, typing.Any], dict[str, typing.Any]]:
    """(base URL, request kwargs, transport options) carrying the secret in ``form``."""
    if form == "bearer":
        return base, {"headers": {"Authorization": f"Bearer {SECRET}"}}, {}
    if form == "basic":
        return base, {"auth": ("api", SECRET)}, {}  # how the W&B client sends it
    if form == "query":
        return base, {"params": {"api_key": SECRET, "page": "2"}}, {}
    if form == "userinfo":
        return base.replace("http://", f"http://api:{SECRET}@"), {}, {}
    return base, {}, {"api_key": SECRET}


def _leaks(text: str) -> bool:
    encoded = base64.b64encode(f"api:{SECRET}".encode()).decode()
    return SECRET in text or encoded in text or SECRET[:16] in text


@pytest.fixture(scope="module")
def server() -> typing.Iterator[ServerThread]:
    running = ServerThread(_app)
    running.start()
    yield running
    running.stop()


def _paths(base: str, dead: str) -> list[str]:
    # Each failure path: fine, throttled to give-up, 503 to give-up, connection refused.
    return [f"{base}/ok", f"{base}/throttled", f"{base}/broken", f"{dead}/ok"]


def _run_sync(
    transports: list[RateLimitTransport], urls: list[str], kwargs: dict[str, typing.Any]
) -> list[RequestFailed]:
    errors: list[RequestFailed] = []
    with httpx.Client(transport=transports[0]) as client, httpx.Client(transport=transports[1]) as on_disk:
        for url in urls:
            try:
                client.get(url, **kwargs)
            except RequestFailed as exc:
                errors.append(exc)
        on_disk.post(urls[0], content=b"x" * 10, **kwargs)
    return errors


async def _run_async(
    transports: list[AsyncRateLimitTransport], urls: list[str], kwargs: dict[str, typing.Any]
) -> list[RequestFailed]:
    errors: list[RequestFailed] = []
    async with (
        httpx.AsyncClient(transport=transports[0]) as client,
        httpx.AsyncClient(transport=transports[1]) as on_disk,
    ):
        for url in urls:
            try:
                await client.get(url, **kwargs)
            except RequestFailed as exc:
                errors.append(exc)
        await on_disk.post(urls[0], content=b"x" * 10, **kwargs)
    return errors


def _files_under(directory: str) -> list[bytes]:
    return [p.read_bytes() for p in pathlib.Path(directory).rglob("*") if p.is_file()]


@pytest.mark.parametrize("form", FORMS)
async def test_the_key_appears_nowhere(
    mode: str, form: str, server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: every library's records
    events: list[Event] = []
    backend = MemoryBackend()
    base, kwargs, options = _request_args(form, server.url)
    urls = _paths(base, base.replace(str(server.port), str(_dead_port())))
    common: dict[str, typing.Any] = {"rate": "1000/second", "burst": 100, "retry": POLICY, "on_event": events.append}
    # One transport on a memory backend, one on the default backend (SQLite, on disk).
    transports: list[typing.Any]
    if mode == "sync":
        transports = [RateLimitTransport(backend=backend, **common, **options), RateLimitTransport(**common, **options)]
        errors = _run_sync(transports, urls, kwargs)
    else:
        transports = [
            AsyncRateLimitTransport(backend=backend, **common, **options),
            AsyncRateLimitTransport(**common, **options),
        ]
        errors = await _run_async(transports, urls, kwargs)

    assert [type(e).__name__ for e in errors] == ["RateLimited", "ServerError", "NetworkFailure"]
    assert {e.kind for e in events} >= {"throttled", "network_failure", "gave_up"}

    records = caplog.records
    assert any(r.name == "httpx" for r in records), "httpx's own request log was captured"
    assert any(r.name == "ratelimit_client" for r in records)
    for record in records:
        assert not _leaks(record.getMessage()), record.getMessage()
    assert not _leaks(caplog.text)
    if form == "query":
        assert any("api_key=***" in r.getMessage() for r in records if r.name == "httpx")

    for event in events:
        assert not _leaks(repr(event))
    for error in errors:
        assert not _leaks(str(error))
        assert not _leaks(repr(error))

    for transport in transports:
        assert not _leaks(repr(transport))
        assert not _leaks(repr(transport.settings))
        assert not _leaks(repr(transport.statistics()))
    assert not _leaks(repr(backend))
    stored = list(backend._tats)
    assert stored
    assert not any(_leaks(key) for key in stored)
    # The default backend's files on disk hold no trace of the key either.
    files = _files_under(os.environ["XDG_CACHE_HOME"])
    assert files
    for data in files:
        assert SECRET.encode() not in data
        assert SECRET[:16].encode() not in data


def test_the_httpx_log_filter_masks_query_values_and_user_info() -> None:
    record = logging.LogRecord(
        "httpx",
        logging.INFO,
        __file__,
        1,
        'HTTP Request: %s %s "%s %d %s"',
        ("GET", httpx.URL(f"https://api:{SECRET}@api.test/files?api_key={SECRET}&page=2"), "HTTP/1.1", 200, "OK"),
        None,
    )
    assert RedactingFilter().filter(record)
    assert record.getMessage() == 'HTTP Request: GET https://api.test/files?api_key=***&page=*** "HTTP/1.1 200 OK"'
    text = logging.LogRecord("httpx", logging.INFO, __file__, 1, f"see https://x.test/?token={SECRET}", None, None)
    RedactingFilter().filter(text)
    assert text.getMessage() == "see https://x.test/?token=***"


def test_the_transports_install_the_filter_once() -> None:
    RateLimitTransport(backend=MemoryBackend())
    AsyncRateLimitTransport(backend=MemoryBackend())
    RateLimitTransport(backend=MemoryBackend())
    filters = [f for f in logging.getLogger("httpx").filters if isinstance(f, RedactingFilter)]
    assert len(filters) == 1
