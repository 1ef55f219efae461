"""Test helpers: a fake clock and a harness that runs one scenario through either transport."""

from __future__ import annotations

import typing

import anyio.lowlevel
import httpx

from ratelimit_client import AsyncRateLimitTransport, MemoryBackend, RateLimitTransport, RetryPolicy

__all__ = ["FAST", "FakeClock", "Harness"]

# Tiny backoff, so a test never waits on the wall clock for a computed delay.
FAST = RetryPolicy(backoff_base=0.001, backoff_max=0.002, throttle_attempts=4, failure_attempts=4)
URL = "https://api.test/v1/files"


class FakeClock:
    """Time that moves only when something sleeps; ``sleeps`` records every sleep asked for."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.on_sleep: typing.Callable[[float], None] | None = None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if self.on_sleep is not None:
            self.on_sleep(seconds)
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await anyio.lowlevel.checkpoint()


class Harness:
    """One transport (``mode`` "sync", or an async backend name) over ``handler``, on a fake clock.

    The limiter's backend reads the fake clock and the transport's sleeps advance it, so
    server-told waits of minutes cost nothing and can be checked exactly.
    """

    def __init__(self, mode: str, handler: typing.Callable[[httpx.Request], typing.Any], **options: typing.Any) -> None:
        self.mode = mode
        self.clock = FakeClock()
        self.backend = MemoryBackend(clock=self.clock)
        settings: dict[str, typing.Any] = {
            "rate": "1000/second",
            "burst": 100,
            "ip": "192.0.2.1",  # never resolve the fake host
            "backend": self.backend,
            "retry": FAST,
        }
        settings.update(options)
        inner = httpx.MockTransport(handler)
        self.transport: RateLimitTransport | AsyncRateLimitTransport
        if mode == "sync":
            self.transport = RateLimitTransport(inner, **settings)
            self.transport._io.sleep = self.clock.sleep
        else:
            self.transport = AsyncRateLimitTransport(inner, **settings)
            self.transport._io.sleep = self.clock.asleep

    async def request(self, method: str = "GET", url: str = URL, **kwargs: typing.Any) -> httpx.Response:
        """Send through the transport (as httpx's client would) and read the response."""
        request = httpx.Request(method, url, **kwargs)
        if isinstance(self.transport, RateLimitTransport):
            response = self.transport.handle_request(request)
            response.read()
        else:
            response = await self.transport.handle_async_request(request)
            await response.aread()
        return response
