"""The I/O the engine asks for, each with its sync and async way of doing it side by side.

The engine is a generator that yields these and is sent their results; a driver runs
them with ``run`` (sync transport) or ``arun`` (async transport). So the logic exists
once, and only waiting and I/O differ between the two transports.

Effects are built on every request, so they are plain slotted dataclasses (a frozen one
pays an ``object.__setattr__`` per field), never mutated once made. An ``arun`` that only
delegates returns the awaitable rather than awaiting it: every coroutine frame between
httpx and the inner transport is passed through again each time the request's I/O
suspends and resumes.
"""

from __future__ import annotations

import dataclasses
import time
import typing

import anyio
import anyio.to_thread
import httpx

from . import _identity
from ._body import Spool, for_async_send

if typing.TYPE_CHECKING:
    from ._backends import Backend, Reservation
    from ._gcra import Bucket

__all__ = ["AsyncIO", "Effect", "SyncIO"]


@dataclasses.dataclass(slots=True)
class SyncIO:
    transport: httpx.BaseTransport
    backend: Backend
    sleep: typing.Callable[[float], None] = time.sleep


@dataclasses.dataclass(slots=True)
class AsyncIO:
    transport: httpx.AsyncBaseTransport
    backend: Backend
    sleep: typing.Callable[[float], typing.Awaitable[None]] = anyio.sleep


@dataclasses.dataclass(slots=True)
class Reserve:
    keys: tuple[str, ...]
    buckets: tuple[Bucket, ...]
    max_wait: float | None

    def run(self, io: SyncIO) -> Reservation:
        return io.backend.reserve(self.keys, self.buckets, max_wait=self.max_wait)

    def arun(self, io: AsyncIO) -> typing.Awaitable[Reservation]:
        return io.backend.areserve(self.keys, self.buckets, max_wait=self.max_wait)


@dataclasses.dataclass(slots=True)
class Cancel:
    reservation: Reservation

    def run(self, io: SyncIO) -> None:
        io.backend.cancel(self.reservation)

    async def arun(self, io: AsyncIO) -> None:
        # Runs while a cancellation is unwinding: shield it, or the slot is never returned.
        with anyio.CancelScope(shield=True):
            await io.backend.acancel(self.reservation)


@dataclasses.dataclass(slots=True)
class Pause:
    keys: tuple[str, ...]
    buckets: tuple[Bucket, ...]
    seconds: float

    def run(self, io: SyncIO) -> None:
        io.backend.pause(self.keys, self.buckets, self.seconds)

    def arun(self, io: AsyncIO) -> typing.Awaitable[None]:
        return io.backend.apause(self.keys, self.buckets, self.seconds)


@dataclasses.dataclass(slots=True)
class Learn:
    key: str
    value: str
    ttl: float

    def run(self, io: SyncIO) -> None:
        io.backend.learn(self.key, self.value, self.ttl)

    def arun(self, io: AsyncIO) -> typing.Awaitable[None]:
        return io.backend.alearn(self.key, self.value, self.ttl)


@dataclasses.dataclass(slots=True)
class Peek:
    key: str

    def run(self, io: SyncIO) -> str | None:
        return io.backend.peek(self.key)

    def arun(self, io: AsyncIO) -> typing.Awaitable[str | None]:
        return io.backend.apeek(self.key)


@dataclasses.dataclass(slots=True)
class Sleep:
    seconds: float

    def run(self, io: SyncIO) -> None:
        io.sleep(self.seconds)

    def arun(self, io: AsyncIO) -> typing.Awaitable[None]:
        return io.sleep(self.seconds)


@dataclasses.dataclass(slots=True)
class Send:
    request: httpx.Request

    def run(self, io: SyncIO) -> httpx.Response:
        return io.transport.handle_request(self.request)

    def arun(self, io: AsyncIO) -> typing.Awaitable[httpx.Response]:
        return io.transport.handle_async_request(for_async_send(self.request))


# A refused answer's body up to this size is read before it is closed: the error raised
# when the retries are spent can show what the server said, and the connection is kept.
_READ_BEFORE_CLOSE = 64 * 1024


@dataclasses.dataclass(slots=True)
class Close:
    """Done with a response that is not returned: read it if small, then close it."""

    response: httpx.Response

    def run(self, io: SyncIO) -> None:
        try:
            if _small(self.response):
                self.response.read()
        except httpx.HTTPError:
            pass  # unread: closed below, as any other
        finally:
            self.response.close()

    async def arun(self, io: AsyncIO) -> None:
        # Also runs while a cancellation unwinds: shield it, or the connection stays taken.
        with anyio.CancelScope(shield=True):
            try:
                if _small(self.response):
                    await self.response.aread()
            except httpx.HTTPError:
                pass
            finally:
                await self.response.aclose()


def _small(response: httpx.Response) -> bool:
    """Whether the response declares a body short enough to read (unknown lengths are not)."""
    length = response.headers.get("content-length", "")
    return length.isascii() and length.isdigit() and int(length) <= _READ_BEFORE_CLOSE


@dataclasses.dataclass(slots=True)
class SpoolBody:
    """Read a one-shot body once into a :class:`Spool` (closed again if reading fails)."""

    stream: object
    threshold: int

    def run(self, io: SyncIO) -> Spool:
        spool = Spool(self.threshold)
        try:
            for chunk in typing.cast("typing.Iterable[bytes]", self.stream):
                spool.write(chunk)
        except BaseException:
            spool.close()
            raise
        return spool

    async def arun(self, io: AsyncIO) -> Spool:
        spool = Spool(self.threshold)
        try:
            async for chunk in typing.cast("typing.AsyncIterable[bytes]", self.stream):
                spool.write(chunk)
        except BaseException:
            spool.close()
            raise
        return spool


@dataclasses.dataclass(slots=True)
class LocalIP:
    host: str
    port: int

    def run(self, io: SyncIO) -> str | None:
        return _identity.local_ip_for(self.host, self.port)

    async def arun(self, io: AsyncIO) -> str | None:
        # Name resolution blocks: keep it off the event loop.
        return await anyio.to_thread.run_sync(_identity.local_ip_for, self.host, self.port)


Effect = Reserve | Cancel | Pause | Learn | Peek | Sleep | Send | Close | SpoolBody | LocalIP
