"""Cancelled callers give back what they took: slots, the waiting count, spooled bodies.

Runs on asyncio and on trio (with trio's MockClock, so waits take no wall time). The
backend reads ``anyio.current_time``, so the limiter follows the event loop's clock.
"""

from __future__ import annotations

import typing

import anyio
import httpx
import pytest
from _support import URL
from trio.testing import MockClock

from ratelimit_client import AsyncRateLimitTransport, MemoryBackend, RateLimitTransport, RetryPolicy, _effects

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> object:
    if request.param == "trio":
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return "asyncio"


class _Setup:
    """A transport paced at one request a second (burst 1) over ``handler``."""

    def __init__(
        self,
        handler: typing.Callable[[httpx.Request], typing.Coroutine[None, None, httpx.Response]],
        rate: str = "2/second",
        **options: typing.Any,
    ) -> None:
        self.backend = MemoryBackend(clock=anyio.current_time)
        self.transport = AsyncRateLimitTransport(
            httpx.MockTransport(handler), rate=rate, ip="192.0.2.1", backend=self.backend, **options
        )
        limiter = self.transport._shared.limiter
        self.keys = limiter.keys("192.0.2.1", limiter.key_id(None))
        self.buckets = limiter.buckets

    async def get(self) -> httpx.Response:
        return await self.transport.handle_async_request(httpx.Request("GET", URL))

    def next_slot(self) -> float:
        """When the next caller would go (seconds from now); takes that slot."""
        return self.backend.reserve(self.keys, self.buckets, max_wait=None).wait


async def _ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200)


async def test_a_cancelled_waiter_gives_its_slot_to_the_next_caller() -> None:
    setup = _Setup(_ok)
    await setup.get()  # takes the free slot; the next is a second away
    with anyio.move_on_after(0.05) as scope:
        await setup.get()  # reserves the slot a second away, then is cancelled waiting for it
    assert scope.cancelled_caught
    # The next caller gets that slot (under a second away), not the one after it (two).
    assert 0 < setup.next_slot() <= 1.0
    assert setup.transport.statistics().waiting == 0


async def test_many_cancelled_waiters_leave_the_queue_as_it_was() -> None:
    setup = _Setup(_ok)
    await setup.get()
    done: list[int] = []

    async def waiter(n: int) -> None:
        await setup.get()
        done.append(n)  # never reached: cancelled before its slot

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(waiter, n)
            await anyio.wait_all_tasks_blocked()
            assert setup.transport.statistics().waiting == 10
            scope.cancel()

    assert done == []
    statistics = setup.transport.statistics()
    assert (statistics.waiting, statistics.slot_waits) == (0, 10)
    assert 0 < setup.next_slot() <= 1.0  # ten slots given back, not burnt


async def test_a_cancelled_middle_waiter_keeps_the_queue_first_come_first_served() -> None:
    setup = _Setup(_ok, rate="20/second")
    await setup.get()
    order: list[str] = []
    scopes: dict[str, anyio.CancelScope] = {}

    async def waiter(name: str) -> None:
        with anyio.CancelScope() as scopes[name]:
            await setup.get()
            order.append(name)

    async with anyio.create_task_group() as tg:
        for name in ("first", "middle", "last"):
            tg.start_soon(waiter, name)
            await anyio.wait_all_tasks_blocked()  # queued in this order
        assert setup.transport.statistics().waiting == 3
        scopes["middle"].cancel()

    assert order == ["first", "last"]
    assert setup.transport.statistics().waiting == 0


async def test_cancelled_while_sending_leaks_nothing() -> None:
    started = anyio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    setup = _Setup(hang)
    with anyio.move_on_after(5) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(setup.get)
            await started.wait()
            tg.cancel_scope.cancel()
    assert not scope.cancelled_caught  # the task group's cancel, not the timeout
    statistics = setup.transport.statistics()
    assert (statistics.waiting, statistics.attempts, statistics.gave_up) == (0, 1, 0)


async def test_cancelled_while_backing_off_leaks_nothing() -> None:
    throttled = anyio.Event()

    async def throttle(request: httpx.Request) -> httpx.Response:
        throttled.set()
        return httpx.Response(429, headers={"Retry-After": "30"})

    setup = _Setup(throttle, retry=RetryPolicy(max_server_wait=60))
    with anyio.move_on_after(0.2) as scope:
        await setup.get()
    assert scope.cancelled_caught
    assert throttled.is_set()
    statistics = setup.transport.statistics()
    assert (statistics.waiting, statistics.throttled, statistics.gave_up) == (0, 1, 0)


def test_a_request_closed_while_it_waits_for_a_slot_closes_cleanly() -> None:
    """A request coroutine destroyed while it waits (closed, not cancelled) once answered
    the close with one more step, which Python refuses: "generator ignored GeneratorExit"."""
    transport = RateLimitTransport(
        httpx.MockTransport(lambda request: httpx.Response(200)),
        rate="1/10s",
        burst=1,
        server_counting="token_bucket",
        backend="memory://",
        ip="192.0.2.30",
    )
    io = transport._io
    transport.handle_request(httpx.Request("GET", "https://api.test/"))  # the free slot
    steps = transport._shared.engine.send(httpx.Request("GET", "https://api.test/"))
    effect = next(steps)
    while not isinstance(effect, _effects.Sleep):
        effect = steps.send(effect.run(io))
    assert effect.seconds > 0  # waiting for the next slot
    steps.close()  # no RuntimeError
    assert transport.statistics().waiting == 0
