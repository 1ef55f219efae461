"""Test helpers: a fake clock and a harness that runs one scenario through either transport."""

from __future__ import annotations

import typing

import anyio.lowlevel
import httpx

from ratelimit_client import AsyncRateLimitTransport, MemoryBackend, RateLimitTransport, RetryPolicy

__all__ = ["FAST", "URL", "FakeClock", "Harness", "Recorder"]

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

    def __init__(
        self, mode: str, handler: typing.Callable[[httpx.Request], typing.Any] | Recorder, **options: typing.Any
    ) -> None:
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
        inner = handler if isinstance(handler, Recorder) else httpx.MockTransport(handler)
        self.transport: RateLimitTransport | AsyncRateLimitTransport
        if mode == "sync":
            self.transport = RateLimitTransport(inner, **settings)
            self.transport._io.sleep = self.clock.sleep
        else:
            self.transport = AsyncRateLimitTransport(inner, **settings)
            self.transport._io.sleep = self.clock.asleep

    async def request(self, method: str = "GET", url: str = URL, **kwargs: typing.Any) -> httpx.Response:
        """Send through the transport (as httpx's client would) and read the response."""
        return await self.arun(httpx.Request(method, url, **kwargs))

    def run(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the sync transport."""
        assert isinstance(self.transport, RateLimitTransport)
        response = self.transport.handle_request(request)
        response.read()
        return response

    async def arun(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through either transport."""
        if isinstance(self.transport, RateLimitTransport):
            response = self.transport.handle_request(request)
            response.read()
        else:
            response = await self.transport.handle_async_request(request)
            await response.aread()
        return response


class Recorder(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An inner transport that reads each body from its stream, as a socket would.

    httpx's MockTransport (so respx too) caches the first read of a body on the Request,
    which would hide a retry that sends an exhausted stream. ``replies`` are used in turn:
    a response, an exception (raised after the whole body was read) or a
    ``(bytes_read, exception)`` pair (the connection drops after that much of the body).
    ``bodies`` holds what each attempt delivered; ``during`` runs inside every attempt.
    """

    def __init__(self, replies: list[httpx.Response | Exception | tuple[int, Exception]]) -> None:
        self.replies = list(replies)
        self.bodies: list[bytes] = []
        self.during: typing.Callable[[], None] | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        return self._reply(iter(request.stream))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        chunks = [chunk async for chunk in request.stream]
        return self._reply(iter(chunks))

    def _reply(self, chunks: typing.Iterator[bytes]) -> httpx.Response:
        if self.during is not None:
            self.during()
        reply = self.replies.pop(0)
        limit = reply[0] if isinstance(reply, tuple) else None
        body = b""
        for chunk in chunks:
            body += chunk
            if limit is not None and len(body) >= limit:
                break
        self.bodies.append(body)
        if isinstance(reply, tuple):
            raise reply[1]
        if isinstance(reply, Exception):
            raise reply
        return reply
