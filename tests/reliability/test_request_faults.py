"""Dropped connections, 503 bursts and slow answers from real loopback servers.

Replayable requests (idempotent methods, or a POST with an Idempotency-Key) are delivered
byte for byte; the others end in a clear error saying they may or may not have been
processed. A connection cut mid-upload by a raw socket server is
tests/test_e2e.py::test_a_generator_upload_cut_mid_way_is_delivered_whole_on_retry (and its
async and POST siblings); these use the emulated API's own faults and a slow app.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import typing

import anyio
import httpx
import pytest
from _servers import ServerThread, read_body

from ratelimit_client import AsyncRateLimitTransport, MemoryBackend, NetworkFailure, RateLimitTransport, RetryPolicy
from ratelimit_client._engine import RequestStats
from ratelimit_client.server import Faults, ServerConfig, background_server

QUICK = RetryPolicy(backoff_base=0.01, backoff_max=0.05, failure_attempts=20)
LIMITS: dict[str, typing.Any] = {
    "rate": "1000/second",
    "server_counting": "token_bucket",
    "backend": MemoryBackend(),
    "api_key": "k",
    "ip": "127.0.0.1",
    "retry": QUICK,
}


def _faulty(**faults: typing.Any) -> ServerConfig:
    return ServerConfig(tiers={"free": "10000/second"}, faults=Faults(seed=7, **faults))


@pytest.mark.anyio
async def test_uploads_through_drops_and_503_bursts_are_all_delivered() -> None:
    rng = random.Random(1)
    bodies = [rng.randbytes(rng.randrange(1, 200_000)) for _ in range(40)]
    # A server failing ~30% of requests outruns the default retry budget (0.2 retries a
    # request, plus a small floor) by design; a caller who knows it is flaky raises it.
    policy = dataclasses.replace(QUICK, retry_budget_ratio=1.0)
    with background_server(_faulty(error_rate=0.15, drop_rate=0.15)) as server:
        transport = AsyncRateLimitTransport(**{**LIMITS, "backend": MemoryBackend(), "retry": policy})
        async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
            answers = []
            for n, body in enumerate(bodies):
                response = await client.post("/upload", content=body, headers={"Idempotency-Key": f"u{n}"})
                answers.append((response.status_code, response.json()))
        failed = server.stats.totals["failed"]
    assert answers == [(200, {"bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()}) for b in bodies]
    assert failed >= 5  # the faults did happen (12 of 40 expected)
    statistics = transport.statistics()
    assert statistics.retries == failed
    assert (statistics.gave_up, statistics.status.value) == (0, "ok")


def test_a_post_without_idempotency_key_is_not_replayed_after_a_drop() -> None:
    with background_server(_faulty(drop_rate=1.0)) as server:
        transport = RateLimitTransport(**{**LIMITS, "backend": MemoryBackend()})
        with httpx.Client(transport=transport, base_url=server.url) as client:
            with pytest.raises(NetworkFailure, match="may or may not have been processed") as caught:
                client.post("/upload", content=b"once only")
            assert caught.value.attempts == 1
            assert isinstance(caught.value.__cause__, httpx.TransportError)
        assert server.stats.totals["failed"] == 1  # seen once, never replayed
    # A 503 to such a POST is handed back as it is, unretried: the caller decides.
    with background_server(_faulty(error_rate=1.0)) as server:
        transport = RateLimitTransport(**{**LIMITS, "backend": MemoryBackend()})
        with httpx.Client(transport=transport, base_url=server.url) as client:
            response = client.post("/upload", content=b"once only")
        assert response.status_code == 503
        assert typing.cast("RequestStats", response.extensions["ratelimit_client"]).attempts == 1
        assert server.stats.totals["failed"] == 1


class SlowFirst:
    """An API whose first ``slow`` answers take ``delay`` seconds; records every body it reads."""

    def __init__(self, slow: int, delay: float) -> None:
        self.slow = slow
        self.delay = delay
        self.bodies: list[bytes] = []

    async def __call__(self, scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        body = await read_body(receive)
        self.bodies.append(body)
        if len(self.bodies) <= self.slow:
            await anyio.sleep(self.delay)
        digest = hashlib.sha256(body).hexdigest().encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})
        await send({"type": "http.response.body", "body": digest})


@pytest.mark.anyio
async def test_slow_answers_past_the_timeout(serve: typing.Callable[[typing.Any], ServerThread]) -> None:
    app = SlowFirst(slow=2, delay=1.0)
    server = serve(app)
    transport = AsyncRateLimitTransport(**{**LIMITS, "backend": MemoryBackend()})
    async with httpx.AsyncClient(transport=transport, base_url=server.url, timeout=0.2) as client:
        # Replayable: a PUT times out twice, then is delivered.
        response = await client.put("/files/a", content=b"model weights")
        assert response.text == hashlib.sha256(b"model weights").hexdigest()
        assert typing.cast("RequestStats", response.extensions["ratelimit_client"]).attempts == 3
        # Not replayable: a POST that timed out waiting for its answer reached the server,
        # which may well have processed it; the error says so and nothing is sent again.
        app.slow = len(app.bodies) + 1
        with pytest.raises(NetworkFailure, match=r"ReadTimeout.*may or may not have been processed"):
            await client.post("/files", content=b"metrics")
    assert app.bodies == [b"model weights"] * 3 + [b"metrics"]
    assert transport.statistics().gave_up == 1
