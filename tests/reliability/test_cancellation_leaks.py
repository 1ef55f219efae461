"""Cancellation at each await point of the request path, against real parts, on asyncio
and trio: no capacity burnt, no connection left open, no spool file left.

tests/test_cancellation.py covers the limiter's side on a mock transport (a cancelled
waiter gives its slot back, whole task groups, the middle of the queue, the counters after
a cancel while sending or backing off). Here: a reserve blocked on a locked SQLite file, a
request hanging on a loopback server, a one-shot body spooled to disk, and a backoff after
real 503s. A Redis reply delayed on the wire is in test_redis_faults.py.
"""

from __future__ import annotations

import asyncio
import functools
import os
import pathlib
import sqlite3
import tempfile
import threading
import typing

import anyio
import httpx
import pytest
from _servers import ServerThread

from ratelimit_client import AsyncRateLimitTransport, MemoryBackend, RetryPolicy, SQLiteBackend

pytestmark = pytest.mark.anyio

Serve = typing.Callable[[typing.Any], ServerThread]


class Hanging:
    """An API that reads the request, then answers only ``answer`` (default: never);
    ``started`` is set when a request is in, ``disconnected`` when its client hung up."""

    def __init__(self, status: int | None = None) -> None:
        self.status = status
        self.started = threading.Event()
        self.disconnected = threading.Event()
        self.requests = 0

    async def __call__(self, scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        while (await receive()).get("more_body"):
            pass
        self.requests += 1
        self.started.set()
        if self.status is not None:
            await send({"type": "http.response.start", "status": self.status, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        if (await receive())["type"] == "http.disconnect":  # blocks until the client goes
            self.disconnected.set()


async def _until(flag: threading.Event, seconds: float = 10.0) -> bool:
    with anyio.move_on_after(seconds):
        # Set by the server's thread: an anyio.Event cannot be set from there.
        while not flag.is_set():  # noqa: ASYNC110
            await anyio.sleep(0.01)
    return flag.is_set()


def _pool(transport: AsyncRateLimitTransport) -> typing.Any:
    inner = transport._io.transport
    assert isinstance(inner, httpx.AsyncHTTPTransport)
    return inner._pool


def _deleted_files() -> set[str]:
    """This process's descriptors open on unlinked files (where spools live)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith("(deleted)"):
            found.add(target)
    return found


def _limited(**options: typing.Any) -> AsyncRateLimitTransport:
    settings: dict[str, typing.Any] = {
        "rate": "1/10s",
        "burst": 1,
        "server_counting": "token_bucket",
        "backend": MemoryBackend(),
        "api_key": "k",
        "ip": "127.0.0.1",
    }
    return AsyncRateLimitTransport(**{**settings, **options})


def _next_wait(transport: AsyncRateLimitTransport) -> float:
    """When the next caller would go (seconds from now); takes that slot."""
    limiter = transport._shared.limiter
    keys = limiter.keys("127.0.0.1", limiter.key_id("k"))
    return transport._shared.backend.reserve(keys, limiter.buckets, max_wait=None).wait


async def test_cancelled_while_reserving_on_a_locked_sqlite_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "limits.sqlite3"
    backend = SQLiteBackend(path)
    transport = _limited(backend=backend)
    request = httpx.Request("GET", "https://api.test/")
    inner = httpx.MockTransport(lambda request: httpx.Response(200))
    transport._io.transport = inner
    await transport.handle_async_request(request)  # the free slot; the next is 10 s away
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the reserve below blocks on this lock (in its thread)
    release = threading.Timer(0.3, other.execute, args=("ROLLBACK",))
    release.start()
    with anyio.move_on_after(0.05) as scope:
        await transport.handle_async_request(request)
    assert scope.cancelled_caught
    release.join()
    other.close()
    # The reserve finished in its thread, then the engine gave the slot back: the next
    # caller gets it (under 10 s away), not the one after it (20 s).
    assert transport.statistics().waiting == 0
    assert 0 < _next_wait(transport) <= 10.0
    await transport.aclose()
    await backend.aclose()  # passed in, so the transport does not own it


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_task_cancelled_while_reserving_on_a_locked_sqlite_file(tmp_path: pathlib.Path) -> None:
    """The same with asyncio's own Task.cancel(), which passes anyio's shields: the worker
    thread's transaction committed and its slot was lost with the abandoned result."""
    path = tmp_path / "limits.sqlite3"
    backend = SQLiteBackend(path)
    transport = _limited(backend=backend)
    request = httpx.Request("GET", "https://api.test/")
    transport._io.transport = httpx.MockTransport(lambda request: httpx.Response(200))
    await transport.handle_async_request(request)  # the free slot; the next is 10 s away
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, other.execute, args=("ROLLBACK",))
    release.start()
    task = asyncio.ensure_future(transport.handle_async_request(request))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.join()
    other.close()
    assert transport.statistics().waiting == 0
    assert 0 < _next_wait(transport) <= 10.0
    await transport.aclose()
    await backend.aclose()


async def test_cancelled_while_sending_leaves_no_connection(serve: Serve) -> None:
    app = Hanging()
    server = serve(app)
    transport = _limited(rate="100/second")
    async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
        with anyio.move_on_after(10) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.get, "/")
                assert await _until(app.started)
                tg.cancel_scope.cancel()
        assert not scope.cancelled_caught  # the task group's cancel, not the timeout
        # The connection under the cancelled request is closed, not returned to the pool,
        # and the server saw it go.
        assert _pool(transport).connections == []
        assert await _until(app.disconnected)
        assert transport.statistics().waiting == 0


async def test_cancelled_spooled_upload_leaves_no_file(
    serve: Serve, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Hanging()
    server = serve(app)
    spools = tmp_path / "spools"
    spools.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spools))  # where spools spill, for this test
    transport = _limited(rate="100/second", spool_threshold=1024)  # the body spills to disk
    before_files = _deleted_files()
    halfway = anyio.Event()

    async def body(stall: bool) -> typing.AsyncIterator[bytes]:
        for _ in range(64):
            yield b"x" * 4096
        if stall:  # cancelled while the body is still being read into the spool
            halfway.set()
            await anyio.sleep_forever()

    async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
        for stall in (True, False):  # cancelled while spooling, then while sending
            app.started.clear()
            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(client.post, "/", content=body(stall)))
                if stall:
                    await halfway.wait()
                else:
                    assert await _until(app.started)
                [spool] = _deleted_files() - before_files  # the spool, on disk
                assert spool.startswith(str(spools))
                tg.cancel_scope.cancel()
            assert _deleted_files() == before_files
            assert list(spools.iterdir()) == []


async def test_cancelled_while_backing_off_after_503s(serve: Serve) -> None:
    app = Hanging(status=503)
    server = serve(app)
    policy = RetryPolicy(backoff_base=30.0, backoff_max=30.0)  # a long backoff to be cancelled in
    transport = _limited(rate="1/10s", retry=policy)
    async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
        with anyio.move_on_after(0.5) as scope:
            await client.get("/")
        assert scope.cancelled_caught
        assert app.requests == 1
        # The 503 was read and closed: its connection is idle in the pool, not held.
        assert all(connection.is_idle() for connection in _pool(transport).connections)
        statistics = transport.statistics()
        assert (statistics.waiting, statistics.attempts, statistics.gave_up) == (0, 1, 0)
        # The retry never reserved: the next slot is the one after the first request's.
        assert 0 < _next_wait(transport) <= 10.0
