"""In-process backend: one dict, one lock. For a single process, and the Redis fallback."""

from __future__ import annotations

import math
import threading
import time
import typing

from .. import _gcra
from ._base import Reservation, spend

if typing.TYPE_CHECKING:
    from .._gcra import Bucket

__all__ = ["MemoryBackend"]

_isfinite = math.isfinite


class MemoryBackend:
    """Limiter state in this process's memory, on a monotonic clock.

    Idle keys (whose state no longer affects any decision) are dropped as they are met,
    so memory follows the number of *active* keys.
    """

    __slots__ = ("_clock", "_holes", "_learned", "_lock", "_tats")

    def __init__(self, *, clock: typing.Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # A key's _gcra.KeyState, split so that the common key (no holes) is one float:
        # reserving it then allocates no state object. A key has holes only if it has a tat.
        self._tats: dict[str, float] = {}
        self._holes: dict[str, tuple[tuple[float, float], ...]] = {}
        self._learned: dict[str, tuple[str, float]] = {}  # key -> (value, expires)

    def __repr__(self) -> str:
        return f"<MemoryBackend keys={len(self._tats)}>"

    def reserve(
        self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], *, max_wait: float | None
    ) -> Reservation:
        # This is the whole uncontended acquire, so it avoids work per call: acquire and
        # release rather than ``with`` (cheaper in CPython), and one key without holes (the
        # common case) straight through the arithmetic, without the KeyStates, lists and
        # Decision of the general case.
        lock = self._lock
        lock.acquire()
        try:
            now = self._clock()
            tats = self._tats
            if len(keys) == 1 and not (self._holes and keys[0] in self._holes):
                # _gcra.reserve for one key, cost 1, no holes (and no stamp: a monotonic
                # clock never steps back), written out: the call and its KeyStates, lists
                # and Decision would cost more than the rest of the acquire.
                # tests/backends/test_memory.py checks that the two agree exactly.
                key = keys[0]
                before = tats.get(key)  # always finite: see _store
                grown = before is None
                if before is None:
                    before = now
                bucket = buckets[0]
                slot = (before if before > now else now) - bucket.lead
                if slot > now:
                    wait = slot - now
                else:
                    slot, wait = now, 0.0
                if max_wait is not None and wait > max_wait:
                    return Reservation(wait, False)
                tat = tats[key] = (before if before > slot else slot) + bucket.interval
                charges: tuple[tuple[float, float], ...] = ((tat, before),)
            else:
                decision = _gcra.reserve(list(map(self._state, keys)), buckets, now, max_wait=max_wait)
                if decision.states is None:
                    return Reservation(decision.wait, False)
                for key, state in zip(keys, decision.states):  # noqa: B905 - _gcra checked the lengths
                    self._store(key, state)
                charges, wait, grown = decision.charges, decision.wait, True
            # Only a new key grows the table, so only then can it need a sweep (the general
            # path does not say, so it always checks). The size check is _prune's first,
            # without a call per request.
            if grown and len(tats) >= 1024:
                self._prune(now)
            learned = self._learned.get(keys[0]) if self._learned else None
        finally:
            lock.release()
        if learned is not None and learned[1] > now:
            return Reservation(wait, True, tuple(keys), charges, False, learned[0])
        return Reservation(wait, True, tuple(keys), charges)

    def cancel(self, reservation: Reservation) -> None:
        taken = spend(reservation)
        if taken is None:
            return
        with self._lock:
            now = self._clock()
            for key, charge in zip(*taken, strict=True):
                state = _gcra.cancel(self._state(key), charge, now)
                if state is not None:
                    self._store(key, state)

    def pause(self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], seconds: float) -> None:
        with self._lock:
            now = self._clock()
            for key, bucket in zip(keys, buckets, strict=True):
                self._store(key, _gcra.pause(self._state(key), bucket, now + seconds, now))

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
            self._tats.clear()
            self._holes.clear()
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

    def _state(self, key: str) -> _gcra.KeyState | None:
        tat = self._tats.get(key)
        return None if tat is None else _gcra.KeyState(tat, self._holes.get(key, ()))

    def _store(self, key: str, state: _gcra.KeyState) -> None:
        if not _isfinite(state.tat):
            # _gcra forgets a non-finite tat (a pause of infinite seconds, say): dropped
            # here, so the one-key path in reserve() never has to check.
            self._tats.pop(key, None)
            self._holes.pop(key, None)
            return
        self._tats[key] = state.tat
        if state.holes:
            self._holes[key] = state.holes
        else:
            self._holes.pop(key, None)

    def _prune(self, now: float) -> None:
        # A tat at or before now is a full bucket, the same as no entry. Sweep only when
        # the table reaches a power of two, so the cost is amortised.
        size = len(self._tats)
        if size < 1024 or size & (size - 1):
            return
        for key in [k for k, tat in self._tats.items() if tat <= now]:
            del self._tats[key]
            self._holes.pop(key, None)
