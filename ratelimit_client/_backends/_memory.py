"""In-process backend: one dict, one lock. For a single process, and the Redis fallback."""

from __future__ import annotations

import threading
import time
import typing

from .. import _gcra
from ._base import Reservation

if typing.TYPE_CHECKING:
    from .._gcra import Bucket

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Limiter state in this process's memory, on a monotonic clock.

    Idle keys (whose state no longer affects any decision) are dropped as they are met,
    so memory follows the number of *active* keys.
    """

    __slots__ = ("_clock", "_learned", "_lock", "_states")

    def __init__(self, *, clock: typing.Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[str, _gcra.KeyState] = {}
        self._learned: dict[str, tuple[str, float]] = {}  # key -> (value, expires)

    def __repr__(self) -> str:
        return f"<MemoryBackend keys={len(self._states)}>"

    def reserve(
        self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], *, max_wait: float | None
    ) -> Reservation:
        # This is the whole uncontended acquire, so it avoids work per call: acquire and
        # release rather than ``with`` (cheaper in CPython), and one key (the common case)
        # straight through the scalar step, without the general case's lists and Decision.
        lock = self._lock
        lock.acquire()
        try:
            now = self._clock()
            states = self._states
            if len(keys) == 1:
                key = keys[0]
                # Positional: CPython binds keyword arguments on a slower path.
                slot, state, before = _gcra.reserve_one(states.get(key), buckets[0], now, max_wait)
                if state is None:
                    return Reservation(slot - now, False)
                states[key] = state
                charges: tuple[tuple[float, float], ...] = ((state.tat, before),)
                wait = slot - now
            else:
                decision = _gcra.reserve(list(map(states.get, keys)), buckets, now, max_wait=max_wait)
                if decision.states is None:
                    return Reservation(decision.wait, False)
                states.update(zip(keys, decision.states, strict=True))
                charges, wait = decision.charges, decision.wait
            if len(states) >= 1024:  # the check _prune starts with, without a call per request
                self._prune(now)
            learned = self._learned.get(keys[0]) if self._learned else None
        finally:
            lock.release()
        if learned is not None and learned[1] > now:
            return Reservation(wait, True, tuple(keys), charges, False, learned[0])
        return Reservation(wait, True, tuple(keys), charges)

    def cancel(self, reservation: Reservation) -> None:
        with self._lock:
            now = self._clock()
            for key, charge in zip(reservation.keys, reservation.charges, strict=True):
                state = _gcra.cancel(self._states.get(key), charge, now)
                if state is not None:
                    self._states[key] = state

    def pause(self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], seconds: float) -> None:
        with self._lock:
            now = self._clock()
            for key, bucket in zip(keys, buckets, strict=True):
                self._states[key] = _gcra.pause(self._states.get(key), bucket, now + seconds, now)

    def learn(self, key: str, value: str, ttl: float) -> None:
        with self._lock:
            now = self._clock()
            self._learned[key] = (value, now + ttl)
            if len(self._learned) >= 1024:
                self._learned = {k: v for k, v in self._learned.items() if v[1] > now}

    def peek(self, key: str) -> str | None:
        with self._lock:
            learned = self._learned.get(key)
            return learned[0] if learned is not None and learned[1] > self._clock() else None

    def close(self) -> None:
        with self._lock:
            self._states.clear()
            self._learned.clear()

    # The work is a few microseconds under a lock: doing it on the event loop is cheaper
    # than a hop to a worker thread.
    async def areserve(
        self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], *, max_wait: float | None
    ) -> Reservation:
        return self.reserve(keys, buckets, max_wait=max_wait)

    async def acancel(self, reservation: Reservation) -> None:
        self.cancel(reservation)

    async def apause(self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], seconds: float) -> None:
        self.pause(keys, buckets, seconds)

    async def alearn(self, key: str, value: str, ttl: float) -> None:
        self.learn(key, value, ttl)

    async def apeek(self, key: str) -> str | None:
        return self.peek(key)

    async def aclose(self) -> None:
        self.close()

    def _prune(self, now: float) -> None:
        # A tat at or before now is a full bucket, the same as no entry. Sweep only when
        # the table reaches a power of two, so the cost is amortised.
        size = len(self._states)
        if size < 1024 or size & (size - 1):
            return
        for key in [k for k, s in self._states.items() if s.tat <= now]:
            del self._states[key]
