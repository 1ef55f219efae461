"""Clock steps under each backend: capacity is not minted, and no caller waits past its
``max_wait`` (and, on the shared wall clock, none waits for a step back at all).

Callers arrive on a *true* timeline every 50 ms; the backend reads that time plus a skew
that steps. A caller goes at its true arrival plus the wait it was given, so counting the
goes in every window of true time shows what a server would have seen.

Memory runs on an (injected) monotonic clock; SQLite on an injected wall clock. Redis
keeps its own ``TIME``, which a test cannot step: a value written before a step back is
tests/backends/test_redis.py::test_a_value_stamped_after_now_is_moved_back_by_the_step; a
state far in the past is below.
"""

from __future__ import annotations

import pathlib
import typing

import pytest
from _servers import max_in_window
from backends._harness import PrivateRedis

from ratelimit_client import Backend, MemoryBackend, RedisBackend, SQLiteBackend
from ratelimit_client._gcra import Bucket

BUCKET = Bucket(0.5, 1)  # 2 a second, burst 1
RATE, BURST = 1 / BUCKET.interval, BUCKET.burst
ARRIVALS = 0.05  # seconds between callers, true time: ten times the rate, so a queue builds
MAX_WAIT = 5.0


class SkewedClock:
    """True time plus a skew that the test steps."""

    def __init__(self) -> None:
        self.true = 1_000_000.0
        self.skew = 0.0

    def __call__(self) -> float:
        return self.true + self.skew


def _run(
    backend: Backend, clock: SkewedClock, steps: dict[int, float], callers: int, max_wait: float | None
) -> tuple[list[float], list[float]]:
    """Callers in turn; before caller ``n``, the skew steps by ``steps[n]`` seconds. Returns
    the true times at which admitted callers go, and the waits they were given."""
    goes: list[float] = []
    waits: list[float] = []
    for n in range(callers):
        clock.skew += steps.get(n, 0.0)
        reservation = backend.reserve(["k"], [BUCKET], max_wait=max_wait)
        if reservation.granted:
            waits.append(reservation.wait)
            goes.append(clock.true + reservation.wait)
        clock.true += ARRIVALS
    return goes, waits


def _backends(tmp_path: pathlib.Path) -> typing.Iterator[tuple[str, typing.Callable[[SkewedClock], Backend]]]:
    yield "memory", lambda clock: MemoryBackend(clock=clock)
    yield "sqlite", lambda clock: SQLiteBackend(tmp_path / "steps.sqlite3", namespace=str(clock.true), clock=clock)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("step", [-30.0, -2.0, 2.0, 30.0])
def test_a_clock_step_mints_nothing_back_and_a_bounded_amount_forward(
    tmp_path: pathlib.Path, kind: str, step: float
) -> None:
    clock = SkewedClock()
    backend = dict(_backends(tmp_path))[kind](clock)
    goes, waits = _run(backend, clock, {200: step}, callers=400, max_wait=MAX_WAIT)
    backend.close()
    # No caller is given a wait longer than it accepted: beyond max_wait it is refused.
    assert max(waits) <= MAX_WAIT
    # In every window of true time: the limit, and nothing more for a step back. A step
    # forward is time passing, as far as the clock can tell: the bucket refills (at most a
    # burst) and the queue already handed out (at most max_wait long) looks that much
    # shorter, so new callers overlap it by up to min(step, max_wait) of rate.
    extra = BURST + RATE * min(step, MAX_WAIT) if step > 0 else 0
    for window in (0.5, 1.0, 5.0, 20.0):
        assert max_in_window(goes, window) <= BURST + RATE * window + extra, (window, max_in_window(goes, window))
    # Still serving: after the step, callers are admitted at the full rate again.
    assert len([g for g in goes if g > goes[-1] - 5.0]) >= RATE * 5.0 - 1


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_step_back_without_max_wait(tmp_path: pathlib.Path, kind: str) -> None:
    """Without ``max_wait``, never minting: on the wall clock (SQLite) the stored queue moves
    back with the step, so nobody waits for it, however long; the monotonic clock (memory)
    keeps no stamps, since it never steps in reality, and waits a step out."""
    clock = SkewedClock()
    backend = dict(_backends(tmp_path))[kind](clock)
    goes, waits = _run(backend, clock, {50: -60.0}, callers=100, max_wait=None)
    queue = 100 * BUCKET.interval  # at most, the callers ahead
    assert max(waits) <= (queue if kind == "sqlite" else 60.0 + queue)
    for window in (1.0, 10.0, 100.0):
        assert max_in_window(goes, window) <= BURST + RATE * window
    if kind == "sqlite":
        clock.skew -= 864_000  # ten days
        assert backend.reserve(["k"], [BUCKET], max_wait=None).wait <= queue
    backend.close()


@pytest.mark.redis
def test_redis_state_far_in_the_past_is_a_full_bucket_not_more(private_redis: PrivateRedis) -> None:
    backend = RedisBackend(private_redis.url, namespace="past")
    seconds, micros = backend.client.time()
    # Written by a host whose clock was a day behind: the bucket is full, no fuller.
    backend.client.set(backend.key("k"), repr(seconds + micros / 1e6 - 86_400), px=60_000)
    waits = [backend.reserve(["k"], [Bucket(10.0, 3)], max_wait=None).wait for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(10.0, abs=0.5)
    backend.close()
