"""End to end, over real sockets on 127.0.0.1: uvicorn serving a rate-limited API, and a
bare server that drops a connection mid-upload.

The server counts what it saw; nothing here measures the client's own timing.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import pathlib
import threading
import typing

import anyio
import httpx
import pytest
from _servers import DroppingUploadServer, FlakyUploadApp, ServerThread, SlidingLogApp, max_in_window

from ratelimit_client import (
    AsyncRateLimitTransport,
    MemoryBackend,
    NetworkFailure,
    RateLimitTransport,
    RequestStats,
    RetryPolicy,
)

LIMIT, WINDOW = 10, 1.0  # the server's quota: 10 requests in any second
REQUESTS = 20
FAST = RetryPolicy(backoff_base=0.01, backoff_max=0.05)


def _body(n: int) -> bytes:
    return f"report {n} ".encode() * 50


def _check_server(app: SlidingLogApp) -> None:
    """Every request arrived once and whole, and never more than the quota in any window."""
    assert sorted(app.bodies) == sorted(str(n) for n in range(REQUESTS))
    assert all(app.bodies[str(n)] == _body(n) for n in range(REQUESTS))
    assert len(app.admitted) == REQUESTS


async def _report_concurrently(transport: AsyncRateLimitTransport, url: str) -> dict[int, httpx.Response]:
    """Send every report at once, each from its own task, through ``transport``."""
    results: dict[int, httpx.Response] = {}
    async with httpx.AsyncClient(transport=transport, base_url=url) as client:

        async def report(n: int) -> None:
            results[n] = await client.post("/report", content=_body(n), headers={"X-Request-Id": str(n)})

        async with anyio.create_task_group() as tg:
            for n in range(REQUESTS):
                tg.start_soon(report, n)
    return results


@pytest.mark.anyio
async def test_concurrent_async_clients_stay_under_the_server_limit(serve: typing.Callable[..., ServerThread]) -> None:
    app = SlidingLogApp(LIMIT, WINDOW)
    server = serve(app)
    # The default pacing (burst 1, 9 per second) is safe against a sliding log of 10/s.
    transport = AsyncRateLimitTransport(rate=f"{LIMIT}/second", backend=MemoryBackend(), retry=FAST)
    results = await _report_concurrently(transport, server.url)

    assert all(r.status_code == 200 for r in results.values())
    assert len(results) == REQUESTS
    _check_server(app)
    assert max_in_window(app.arrivals, WINDOW) <= LIMIT
    assert app.refused == 0
    assert transport.statistics().throttled == 0


def test_threads_sharing_the_sync_transport_stay_under_the_server_limit(
    serve: typing.Callable[..., ServerThread],
) -> None:
    app = SlidingLogApp(LIMIT, WINDOW)
    server = serve(app)
    transport = RateLimitTransport(rate=f"{LIMIT}/second", backend=MemoryBackend(), retry=FAST)

    with httpx.Client(transport=transport, base_url=server.url) as client:

        def report(n: int) -> int:
            return client.post("/report", content=_body(n), headers={"X-Request-Id": str(n)}).status_code

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(report, range(REQUESTS)))

    assert statuses == [200] * REQUESTS
    _check_server(app)
    assert max_in_window(app.arrivals, WINDOW) <= LIMIT
    assert app.refused == 0


@pytest.mark.anyio
async def test_a_client_too_fast_for_the_server_obeys_retry_after_and_loses_nothing(
    serve: typing.Callable[..., ServerThread],
) -> None:
    app = SlidingLogApp(LIMIT, WINDOW)
    server = serve(app)
    # Told the server is twice as generous as it is: it will draw 429s and must recover.
    transport = AsyncRateLimitTransport(
        rate=f"{2 * LIMIT}/second", burst=LIMIT, server_counting="token_bucket", backend=MemoryBackend(), retry=FAST
    )
    results = await _report_concurrently(transport, server.url)

    assert sorted(results) == list(range(REQUESTS))
    assert all(r.status_code == 200 for r in results.values())
    _check_server(app)
    statistics = transport.statistics()
    assert app.refused > 0  # the scenario did exercise the 429 path
    assert statistics.throttled == app.refused
    # The first 429 pauses the shared bucket, and callers already queued wait for the pause
    # too: a handful of 429s, not one for every request still in the queue.
    assert app.refused <= 5
    attempts = [typing.cast("RequestStats", r.extensions["ratelimit_client"]).attempts for r in results.values()]
    assert sum(attempts) == len(app.arrivals)


PAYLOAD = b"".join(hashlib.sha256(str(n).encode()).digest() for n in range(32 * 1024))  # 1 MiB


def _chunks() -> typing.Iterator[bytes]:
    for start in range(0, len(PAYLOAD), 65536):
        yield PAYLOAD[start : start + 65536]


async def _achunks() -> typing.AsyncIterator[bytes]:
    for chunk in _chunks():
        yield chunk


def test_a_generator_upload_cut_mid_way_is_delivered_whole_on_retry() -> None:
    with DroppingUploadServer(drop_after=200_000) as server:
        transport = RateLimitTransport(rate="100/second", backend=MemoryBackend(), retry=FAST)
        with httpx.Client(transport=transport) as client:
            response = client.put(f"{server.url}/files/model.bin", content=_chunks())
    assert response.text == hashlib.sha256(PAYLOAD).hexdigest()
    assert server.dropped == 1
    assert server.received == [PAYLOAD]
    assert typing.cast("RequestStats", response.extensions["ratelimit_client"]).attempts == 2


@pytest.mark.anyio
async def test_an_async_iterator_upload_cut_mid_way_is_delivered_whole_on_retry() -> None:
    with DroppingUploadServer(drop_after=200_000) as server:
        transport = AsyncRateLimitTransport(rate="100/second", backend=MemoryBackend(), retry=FAST)
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.post(
                f"{server.url}/files", content=_achunks(), headers={"Idempotency-Key": "upload-1"}
            )
    assert response.text == hashlib.sha256(PAYLOAD).hexdigest()
    assert (server.dropped, server.received) == (1, [PAYLOAD])


def test_a_post_cut_mid_way_is_not_replayed_and_says_so() -> None:
    with DroppingUploadServer(drop_after=200_000) as server:
        transport = RateLimitTransport(rate="100/second", backend=MemoryBackend(), retry=FAST)
        with httpx.Client(transport=transport) as client, pytest.raises(NetworkFailure) as caught:
            client.post(f"{server.url}/files", content=_chunks())
    assert "may or may not have been processed" in str(caught.value)
    assert caught.value.attempts == 1
    assert isinstance(caught.value.__cause__, httpx.TransportError)
    assert (server.dropped, server.received) == (1, [])


def _check_uploads(app: FlakyUploadApp, *, content_length: str | None) -> None:
    """Two attempts (a 503, then a 200), each the whole payload, framed as expected."""
    assert [upload.body for upload in app.uploads] == [PAYLOAD, PAYLOAD]
    assert all(upload.content_length == content_length for upload in app.uploads)
    assert all(upload.chunked is (content_length is None) for upload in app.uploads)


@pytest.mark.anyio
async def test_an_async_file_upload_is_sent_whole_on_every_attempt(
    serve: typing.Callable[..., ServerThread], tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(PAYLOAD)
    server = serve(app := FlakyUploadApp(failures=1))
    transport = AsyncRateLimitTransport(rate="100/second", backend=MemoryBackend(), retry=FAST)
    async with httpx.AsyncClient(transport=transport) as client, await anyio.open_file(path, "rb") as file:
        response = await client.put(f"{server.url}/files/model.bin", content=file)
    assert response.status_code == 200
    _check_uploads(app, content_length=None)  # httpx sends an async file chunked


def test_a_pipe_upload_is_sent_whole_with_its_true_content_length(serve: typing.Callable[..., ServerThread]) -> None:
    # httpx declares the pipe's length as fstat gives it, 0; plain httpx fails here too.
    read_end, write_end = os.pipe()

    def feed() -> None:
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(PAYLOAD)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    server = serve(app := FlakyUploadApp(failures=1))
    transport = RateLimitTransport(rate="100/second", backend=MemoryBackend(), retry=FAST)
    with httpx.Client(transport=transport) as client, os.fdopen(read_end, "rb") as pipe:
        response = client.put(f"{server.url}/files/model.bin", content=pipe)
    writer.join(10)
    assert response.status_code == 200
    _check_uploads(app, content_length=str(len(PAYLOAD)))


def test_a_file_handed_over_partway_is_sent_from_there_with_its_true_length(
    serve: typing.Callable[..., ServerThread], tmp_path: pathlib.Path
) -> None:
    # httpx declares the whole file's size; plain httpx fails with "Too little data".
    path = tmp_path / "model.bin"
    path.write_bytes(b"header: skip me\n" + PAYLOAD)
    server = serve(app := FlakyUploadApp(failures=1))
    transport = RateLimitTransport(rate="100/second", backend=MemoryBackend(), retry=FAST)
    with httpx.Client(transport=transport) as client, path.open("rb") as file:
        file.readline()
        response = client.put(f"{server.url}/files/model.bin", content=file)
    assert response.status_code == 200
    _check_uploads(app, content_length=str(len(PAYLOAD)))


@pytest.mark.parametrize("declared", [1, 2 * len(PAYLOAD)])
def test_a_wrong_content_length_is_corrected_for_a_spooled_upload(
    serve: typing.Callable[..., ServerThread], declared: int
) -> None:
    server = serve(app := FlakyUploadApp(failures=1))
    transport = RateLimitTransport(rate="100/second", backend=MemoryBackend(), retry=FAST)
    with httpx.Client(transport=transport) as client:
        response = client.put(
            f"{server.url}/files/model.bin", content=_chunks(), headers={"Content-Length": str(declared)}
        )
    assert response.status_code == 200
    _check_uploads(app, content_length=str(len(PAYLOAD)))
