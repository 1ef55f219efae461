"""Redis slowed and cancelled mid-flight, through a delaying TCP proxy to a private redis-server.

Redis stopped and restarted under a running transport is tests/backends/test_redis.py::
test_requests_flow_on_the_fallback_while_redis_is_down (sync) and
::test_the_async_path_falls_back_and_comes_back (async); a call cancelled while the server
itself is busy (DEBUG SLEEP) is ::test_a_cancelled_round_trip_keeps_the_connection_in_step.
These tests slow the *network* instead, so replies arrive late on the wire.
"""

from __future__ import annotations

import asyncio
import time

import anyio
import httpx
import pytest
from backends._harness import PrivateRedis

from ratelimit_client import (
    AsyncRateLimitTransport,
    BackendError,
    Event,
    FallbackBackend,
    RateLimitTransport,
    RedisBackend,
)
from ratelimit_client._backends import Reservation
from ratelimit_client._gcra import Bucket
from reliability._proxy import DelayProxy

pytestmark = pytest.mark.redis

# Distinct intervals: a reply to one call can never pass for the reply to another.
A, B, C = Bucket(7.0, 1), Bucket(11.0, 1), Bucket(13.0, 1)
TIMEOUT = 0.2  # the backend's socket timeout here; the proxy delays replies past it


def _own(reservation: Reservation, keys: tuple[str, ...], buckets: tuple[Bucket, ...]) -> bool:
    """Whether ``reservation`` is the answer to a fresh reserve of ``keys`` (each charged
    exactly its own interval): a stale reply to another call has other keys or numbers."""
    return (
        reservation.keys == keys
        and reservation.wait == 0.0
        and len(reservation.charges) == len(buckets)
        and all(w - b == pytest.approx(k.interval) for (w, b), k in zip(reservation.charges, buckets, strict=True))
    )


def test_a_slowed_redis_falls_back_and_comes_back(slow_redis: DelayProxy, private_redis: PrivateRedis) -> None:
    events: list[Event] = []
    backend = FallbackBackend(
        RedisBackend(slow_redis.url, namespace="slow", socket_timeout=TIMEOUT),
        probe_interval=0.05,
        emit=lambda event, level: events.append(event),
    )
    transport = RateLimitTransport(
        httpx.MockTransport(lambda request: httpx.Response(200)),
        rate="1000/second",
        server_counting="token_bucket",
        backend=backend,
        api_key="k",
        ip="192.0.2.20",
    )
    with httpx.Client(transport=transport) as client:
        assert client.get("https://api.test/").status_code == 200
        assert not backend.degraded
        slow_redis.delay = 3 * TIMEOUT  # every reply now misses the client's timeout
        assert [client.get("https://api.test/").status_code for _ in range(10)] == [200] * 10
        assert backend.degraded
        assert [e.kind for e in events] == ["backend_degraded"]
        assert "TimeoutError" in (events[0].reason or "")
        slow_redis.delay = 0.0
        deadline = time.monotonic() + 10
        while backend.degraded and time.monotonic() < deadline:
            assert client.get("https://api.test/").status_code == 200
            time.sleep(0.02)
        assert [e.kind for e in events] == ["backend_degraded", "backend_restored"]
        # Back on Redis, and its answers are its own (the late replies were never read).
        assert _own(backend.reserve(["b", "c"], [B, C], max_wait=None), ("b", "c"), (B, C))
    transport.close()


def test_a_timed_out_reply_is_never_read_by_the_next_call(slow_redis: DelayProxy) -> None:
    backend = RedisBackend(slow_redis.url, namespace="late", socket_timeout=TIMEOUT)
    assert _own(backend.reserve(["warm"], [A], max_wait=None), ("warm",), (A,))
    for round_ in range(3):
        slow_redis.delay = 2 * TIMEOUT
        with pytest.raises(BackendError, match="Timeout"):
            backend.reserve([f"a{round_}"], [A], max_wait=None)
        slow_redis.delay = 0.0
        time.sleep(3 * TIMEOUT)  # the late reply has reached the client's socket by now
        keys = (f"b{round_}", f"c{round_}")
        assert _own(backend.reserve(keys, [B, C], max_wait=None), keys, (B, C))
    backend.close()


@pytest.mark.anyio
async def test_a_call_cancelled_mid_flight_leaves_no_stray_reply(slow_redis: DelayProxy, anyio_backend: str) -> None:
    backend = RedisBackend(slow_redis.url, namespace="cancel", socket_timeout=2.0)
    assert _own(await backend.areserve(["warm"], [A], max_wait=None), ("warm",), (A,))
    for round_ in range(3):
        slow_redis.delay = 0.3
        got: list[Reservation] = []
        with anyio.move_on_after(0.05) as scope:
            got.append(await backend.areserve([f"a{round_}"], [A], max_wait=None))
        assert scope.cancel_called
        slow_redis.delay = 0.0
        # The call ran to its end either way. On trio its own reply came back, to give
        # back; on asyncio the cancelled call gave its slot back itself before raising.
        assert len(got) == (1 if anyio_backend == "trio" else 0)
        for reservation in got:
            assert _own(reservation, (f"a{round_}",), (A,))
            await backend.acancel(reservation)
        keys = (f"b{round_}", f"c{round_}")
        assert _own(await backend.areserve(keys, [B, C], max_wait=None), keys, (B, C))
        # The cancelled caller's slot went back: the next caller of its key goes at once.
        assert _own(await backend.areserve([f"a{round_}"], [A], max_wait=None), (f"a{round_}",), (A,))
    await backend.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_a_call_cancelled_by_task_cancel_mid_flight_gives_its_slot_back(slow_redis: DelayProxy) -> None:
    """asyncio's own Task.cancel() passes anyio's shields: the script ran on in Redis, and
    its reply (the slot it took) was lost, so the key's next caller waited an interval."""
    backend = RedisBackend(slow_redis.url, namespace="native-cancel", socket_timeout=2.0)
    assert _own(await backend.areserve(["warm"], [A], max_wait=None), ("warm",), (A,))
    slow_redis.delay = 0.3
    task = asyncio.ensure_future(backend.areserve(["n"], [A], max_wait=None))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    slow_redis.delay = 0.0
    assert _own(await backend.areserve(["n"], [A], max_wait=None), ("n",), (A,))  # at once
    await backend.aclose()


@pytest.mark.anyio
async def test_a_request_cancelled_while_redis_is_slow_gives_its_slot_back(slow_redis: DelayProxy) -> None:
    backend = RedisBackend(slow_redis.url, namespace="engine", socket_timeout=2.0)
    transport = AsyncRateLimitTransport(
        httpx.MockTransport(lambda request: httpx.Response(200)),
        rate="1/10s",  # room for the slow round trips (a script load on first cancel: three)
        burst=1,
        server_counting="token_bucket",
        backend=backend,
        api_key="k",
        ip="192.0.2.21",
    )
    limiter = transport._shared.limiter
    keys = limiter.keys("192.0.2.21", limiter.key_id("k"))
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get("https://api.test/")).status_code == 200  # the free slot
        slow_redis.delay = 0.3
        with anyio.move_on_after(0.05) as scope:
            await client.get("https://api.test/")  # reserving (slowly) the slot 10 s away
        assert scope.cancelled_caught
        slow_redis.delay = 0.0
        assert transport.statistics().waiting == 0
        # That slot was given back: the next caller gets it (under 10 s away), not the one
        # after it (20 s away).
        nxt = await backend.areserve(keys, limiter.buckets, max_wait=None)
        assert 0 < nxt.wait <= 10.0
    await backend.aclose()
