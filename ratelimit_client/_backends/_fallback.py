"""Keep limiting when the shared backend is down: a local bucket until it answers again."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import typing

from .._events import Event, logger
from .._exceptions import BackendError
from ._base import Backend, Reservation
from ._memory import MemoryBackend

if typing.TYPE_CHECKING:
    from .._gcra import Bucket

__all__ = ["FallbackBackend"]

T = typing.TypeVar("T")


def _log(event: Event, level: int) -> None:
    logger.log(level, "%s", event.message)


class FallbackBackend:
    """``primary`` (say Redis) while it answers; a local :class:`MemoryBackend` while it fails.

    The first failure emits a ``backend_degraded`` event and switches to the local bucket
    (limiting this process alone: the fleet may then briefly exceed the quota, which beats
    stopping). The primary is tried again every ``probe_interval`` seconds; its first
    answer emits ``backend_restored``::

        backend = FallbackBackend(RedisBackend("redis://cache:6379/0"))
    """

    __slots__ = ("_clock", "_degraded", "_emit", "_lock", "_next_probe", "local", "primary", "probe_interval")

    def __init__(
        self,
        primary: Backend,
        *,
        local: Backend | None = None,
        probe_interval: float = 1.0,
        emit: typing.Callable[[Event, int], None] = _log,
        clock: typing.Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.local = local if local is not None else MemoryBackend()
        self.probe_interval = probe_interval
        self._emit = emit
        self._clock = clock
        self._lock = threading.Lock()
        self._degraded = False
        self._next_probe = 0.0

    def __repr__(self) -> str:
        state = "degraded" if self._degraded else "ok"
        return f"<FallbackBackend {self.primary!r} {state}>"

    @property
    def degraded(self) -> bool:
        """True while requests are limited by the local bucket."""
        return self._degraded

    def _try_primary(self) -> bool:
        with self._lock:
            if not self._degraded:
                return True
            now = self._clock()
            if now < self._next_probe:
                return False
            # One probe per interval: the other callers stay local meanwhile.
            self._next_probe = now + self.probe_interval
            return True

    def _failed(self, exc: BackendError) -> None:
        with self._lock:
            first, self._degraded = not self._degraded, True
            self._next_probe = self._clock() + self.probe_interval
        if first:
            message = f"shared rate-limit backend unavailable, limiting locally: {exc}"
            self._emit(Event("backend_degraded", message, reason=str(exc)), logging.WARNING)

    def _answered(self) -> None:
        with self._lock:
            restored, self._degraded = self._degraded, False
        if restored:
            self._emit(Event("backend_restored", "shared rate-limit backend answering again"), logging.INFO)

    def _route(self, primary: typing.Callable[[], T], local: typing.Callable[[], T]) -> tuple[T, bool]:
        if self._try_primary():
            try:
                value = primary()
            except BackendError as exc:
                self._failed(exc)
            else:
                self._answered()
                return value, False
        return local(), True

    async def _aroute(
        self, primary: typing.Callable[[], typing.Awaitable[T]], local: typing.Callable[[], typing.Awaitable[T]]
    ) -> tuple[T, bool]:
        if self._try_primary():
            try:
                value = await primary()
            except BackendError as exc:
                self._failed(exc)
            else:
                self._answered()
                return value, False
        return await local(), True

    @staticmethod
    def _mark(reservation: Reservation, local: bool) -> Reservation:
        return dataclasses.replace(reservation, fallback=True) if local else reservation

    def reserve(
        self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], *, max_wait: float | None
    ) -> Reservation:
        return self._mark(
            *self._route(
                lambda: self.primary.reserve(keys, buckets, max_wait=max_wait),
                lambda: self.local.reserve(keys, buckets, max_wait=max_wait),
            )
        )

    def cancel(self, reservation: Reservation) -> None:
        # A reservation goes back where it came from; one the primary cannot take back
        # (it just went down) is lost there, costing at most one slot.
        if reservation.fallback:
            self.local.cancel(reservation)
            return
        try:
            self.primary.cancel(reservation)
        except BackendError as exc:
            self._failed(exc)

    def pause(self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], seconds: float) -> None:
        self._route(
            lambda: self.primary.pause(keys, buckets, seconds), lambda: self.local.pause(keys, buckets, seconds)
        )

    def learn(self, key: str, value: str, ttl: float) -> None:
        self._route(lambda: self.primary.learn(key, value, ttl), lambda: self.local.learn(key, value, ttl))

    def peek(self, key: str) -> str | None:
        return self._route(lambda: self.primary.peek(key), lambda: self.local.peek(key))[0]

    def close(self) -> None:
        self.primary.close()
        self.local.close()

    async def areserve(
        self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], *, max_wait: float | None
    ) -> Reservation:
        return self._mark(
            *await self._aroute(
                lambda: self.primary.areserve(keys, buckets, max_wait=max_wait),
                lambda: self.local.areserve(keys, buckets, max_wait=max_wait),
            )
        )

    async def acancel(self, reservation: Reservation) -> None:
        if reservation.fallback:
            await self.local.acancel(reservation)
            return
        try:
            await self.primary.acancel(reservation)
        except BackendError as exc:
            self._failed(exc)

    async def apause(self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], seconds: float) -> None:
        await self._aroute(
            lambda: self.primary.apause(keys, buckets, seconds), lambda: self.local.apause(keys, buckets, seconds)
        )

    async def alearn(self, key: str, value: str, ttl: float) -> None:
        await self._aroute(lambda: self.primary.alearn(key, value, ttl), lambda: self.local.alearn(key, value, ttl))

    async def apeek(self, key: str) -> str | None:
        return (await self._aroute(lambda: self.primary.apeek(key), lambda: self.local.apeek(key)))[0]

    async def aclose(self) -> None:
        await self.primary.aclose()
        await self.local.aclose()
