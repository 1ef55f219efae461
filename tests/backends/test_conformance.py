"""One suite, every backend (memory, SQLite, Redis): each must behave as the pure model in _gcra.py."""

from __future__ import annotations

import math
import random
import time
import typing

import anyio
import httpx
import pytest

from backends._harness import Harness
from ratelimit_client import AsyncRateLimitTransport, RateLimitTransport, Reservation
from ratelimit_client._gcra import Bucket, KeyState, cancel, pause, reserve

# Intervals of seconds, so the milliseconds between Redis's clock and ours change no
# decision; TOL absorbs them in the waits compared.
TOL = 0.1
BUCKETS = {"x": Bucket(10.0, 2), "y": Bucket(7.0, 1)}
KEY_SETS: tuple[tuple[str, ...], ...] = (("x",), ("y",), ("x", "y"))


class Model:
    """The pure functions, with a fixed ``now``: what every backend must answer."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.states: dict[str, KeyState | None] = {}

    def reserve(self, keys: typing.Sequence[str], max_wait: float | None) -> tuple[float, bool, tuple[typing.Any, ...]]:
        decision = reserve([self.states.get(k) for k in keys], [BUCKETS[k] for k in keys], self.now, max_wait=max_wait)
        if decision.states is not None:
            self.states.update(zip(keys, decision.states, strict=True))
        return decision.wait, decision.granted, decision.charges

    def cancel(self, keys: typing.Sequence[str], charges: typing.Sequence[tuple[float, float]]) -> None:
        for key, charge in zip(keys, charges, strict=True):
            self.states[key] = cancel(self.states.get(key), charge, self.now)

    def pause(self, keys: typing.Sequence[str], seconds: float) -> None:
        for key in keys:
            self.states[key] = pause(self.states.get(key), BUCKETS[key], self.now + seconds, self.now)


@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_the_pure_model(harness: Harness, seed: int) -> None:
    """Random reserve / cancel / pause sequences: every wait and grant matches the model's."""
    rng = random.Random(seed)
    backend = harness.open()
    model = Model()
    start = time.monotonic()
    pending: list[tuple[Reservation, tuple[str, ...], tuple[typing.Any, ...]]] = []
    for step in range(30):
        if harness.clock is None:  # Redis keeps its own time: the model follows it
            model.now = 1_000_000.0 + time.monotonic() - start
        action = rng.random()
        keys: tuple[str, ...] = rng.choice(KEY_SETS)
        if action < 0.6 or not pending:
            max_wait = rng.choice([None, 0.5, 12.5, 40.5])
            got = backend.reserve(keys, [BUCKETS[k] for k in keys], max_wait=max_wait)
            wait, granted, charges = model.reserve(keys, max_wait)
            assert got.granted == granted, f"step {step}"
            assert got.wait == pytest.approx(wait, abs=TOL), f"step {step}"
            if granted:
                pending.append((got, keys, charges))
        elif action < 0.9:
            got, keys, charges = pending.pop(rng.randrange(len(pending)))
            backend.cancel(got)
            model.cancel(keys, charges)
        else:
            seconds = rng.choice([5.0, 30.0])
            backend.pause(keys, [BUCKETS[k] for k in keys], seconds)
            model.pause(keys, seconds)
    # The end state too: the next slot of each key is the model's.
    for keys in KEY_SETS:
        assert backend.reserve(keys, [BUCKETS[k] for k in keys], max_wait=0.0).wait == pytest.approx(
            model.reserve(keys, 0.0)[0], abs=TOL
        )


def test_a_free_bucket_answers_a_wait_of_exactly_zero(harness: Harness) -> None:
    """Exactly, not an ulp above: a wait of 1e-13 s would still cost a sleep (and a waited
    slot is re-checked against pauses), on every request of an idle key. It showed with
    a monotonic clock of a minute or so (just after boot) and intervals of seconds."""
    backend = harness.open()
    if harness.clock is not None:
        harness.clock.now = 61.0
    for i, interval in enumerate([0.3, 1.2, 2.9, 86.4, 3600 / 7, 86400 / 7]):
        harness.advance(0.0137)  # a clock that is not a round number
        for burst in (1, 3):
            got = backend.reserve([f"fresh-{i}-{burst}"], [Bucket(interval, burst)], max_wait=0.0)
            assert (got.granted, got.wait) == (True, 0.0), (interval, burst)


def test_several_limits_are_taken_all_or_nothing(harness: Harness) -> None:
    backend = harness.open()
    minute, hour = Bucket(10.0, 1), Bucket(100.0, 1)
    assert backend.reserve(["m"], [minute], max_wait=0).granted
    # The minute limit is spent, so the pair is refused, and the hour limit stays untouched.
    refused = backend.reserve(["m", "h"], [minute, hour], max_wait=0.5)
    assert not refused.granted
    assert refused.wait == pytest.approx(10.0, abs=TOL)
    assert backend.reserve(["h"], [hour], max_wait=0).wait == pytest.approx(0.0, abs=TOL)
    # Granted across both: each key is charged at the shared slot (10 s from now).
    both = backend.reserve(["m", "h2"], [minute, hour], max_wait=None)
    assert both.wait == pytest.approx(10.0, abs=TOL)
    assert backend.reserve(["h2"], [hour], max_wait=None).wait == pytest.approx(110.0, abs=TOL)


def test_a_burst_larger_than_the_horizon_is_still_limited(harness: Harness) -> None:
    """1 000 at once per hour: a full burst puts the key's time ~an hour ahead, which
    the wall-clock backends once took for a clock step and forgot, admitting without end."""
    backend = harness.open()
    bucket = Bucket(3.6, 1000)
    started = time.monotonic()
    granted = sum(backend.reserve(["k"], [bucket], max_wait=0.0).granted for _ in range(1200))
    refilled = (time.monotonic() - started) / bucket.interval  # Redis's clock runs meanwhile
    assert 1000 <= granted <= 1000 + refilled + 1


def test_a_pause_is_shared_and_waiters_wake_one_interval_apart(harness: Harness) -> None:
    one, other = harness.open(), harness.open()
    bucket = Bucket(0.5, 1)
    one.pause(["k"], [bucket], 30.0)
    # Fifteen processes waiting behind the pause get fifteen evenly spaced slots, not one.
    waits = [other.reserve(["k"], [bucket], max_wait=None).wait for _ in range(15)]
    assert waits == pytest.approx([30.0 + 0.5 * i for i in range(15)], abs=TOL)


def test_a_pause_never_shortens_a_longer_queue(harness: Harness) -> None:
    backend = harness.open()
    bucket = Bucket(10.0, 1)
    for _ in range(5):
        backend.reserve(["k"], [bucket], max_wait=None)
    backend.pause(["k"], [bucket], 5.0)
    assert backend.reserve(["k"], [bucket], max_wait=None).wait == pytest.approx(50.0, abs=TOL)


def test_cancelling_gives_capacity_back(harness: Harness) -> None:
    backend = harness.open()
    bucket = Bucket(10.0, 1)
    first = backend.reserve(["k"], [bucket], max_wait=None)
    second = backend.reserve(["k"], [bucket], max_wait=None)
    third = backend.reserve(["k"], [bucket], max_wait=None)
    assert [first.wait, second.wait, third.wait] == pytest.approx([0.0, 10.0, 20.0], abs=TOL)
    # Out of order: the middle one leaves a hole, the last one collapses through it.
    backend.cancel(second)
    backend.cancel(third)
    assert backend.reserve(["k"], [bucket], max_wait=None).wait == pytest.approx(10.0, abs=TOL)


def test_cancelling_twice_gives_back_once(harness: Harness) -> None:
    """The stored state alone cannot tell a second cancel from a first: a later reservation
    may land on the same tat. So a cancel spends the reservation, and the second does nothing."""
    backend = harness.open()
    bucket = Bucket(10.0, 1)
    backend.reserve(["k"], [bucket], max_wait=None)  # the head of the queue
    first = backend.reserve(["k"], [bucket], max_wait=None)  # slot 10 s
    backend.cancel(first)
    assert first.charges == ()
    backend.cancel(first)  # nothing more comes back
    kept = backend.reserve(["k"], [bucket], max_wait=None)  # lands where first was
    assert kept.wait == pytest.approx(10.0, abs=TOL)
    backend.cancel(first)
    # Had the second (or third) cancel undone `kept`, this would be at 10 s again.
    assert backend.reserve(["k"], [bucket], max_wait=None).wait == pytest.approx(20.0, abs=TOL)


def test_namespaces_do_not_share_state(harness: Harness) -> None:
    bucket = Bucket(60.0, 1)
    # All opened first: opening one (a cluster client finds its slots, ~0.12 s under
    # CPython 3.12 here) between the reserves would count as time passing.
    first, again, other = harness.open("a"), harness.open("a"), harness.open("b")
    first.reserve(["k"], [bucket], max_wait=None)
    assert again.reserve(["k"], [bucket], max_wait=None).wait == pytest.approx(60.0, abs=TOL)
    assert other.reserve(["k"], [bucket], max_wait=None).wait == pytest.approx(0.0, abs=TOL)


def test_idle_keys_are_dropped(harness: Harness) -> None:
    backend = harness.open()
    bucket = Bucket(0.1, 1)
    # Memory sweeps when its table reaches a power of two; the others per key or per minute.
    count = 2048 if harness.name == "memory" else 20
    for i in range(count):
        backend.reserve([f"k{i}"], [bucket], max_wait=None)
    assert harness.stored() == count
    harness.advance(61.0 if harness.clock is not None else 0.3)
    for i in range(count):
        backend.reserve([f"new{i}"], [bucket], max_wait=None)
    if harness.name == "redis":
        harness.advance(0.3)
        assert harness.stored() == 0
    else:
        assert harness.stored() <= count


def test_no_raw_api_key_is_stored(harness: Harness) -> None:
    api_key = "sk-live-RAW-SECRET-0123456789"
    backend = harness.open()
    transport = RateLimitTransport(
        httpx.MockTransport(lambda request: httpx.Response(200)),
        rate="1/hour",  # long-lived state, so there is something to scan
        burst=10,
        server_counting="token_bucket",
        backend=backend,
        ip="192.0.2.7",
    )
    with httpx.Client(transport=transport) as client:
        for _ in range(3):
            client.get("https://api.test/v1", headers={"Authorization": f"Bearer {api_key}"})
        response = client.get("https://api.test/v1", headers={"Authorization": "Bearer other"})
        assert response.status_code == 200
    # A learned value is stored under the same hashed key: the scan covers it too.
    limiter = transport._shared.limiter
    backend.learn(limiter.keys("192.0.2.7", limiter.key_id(api_key))[0], LEARNED, 3600.0)
    assert harness.stored() >= 2  # one row or key per API key, hashed
    stored = harness.raw()
    assert LEARNED.encode() in stored
    assert api_key.encode() not in stored
    assert b"RAW-SECRET" not in stored


# Opaque text as the engine writes it: JSON, with spaces.
LEARNED = '{"rate": 0.75, "why": "429 without headers"}'


def test_a_learned_value_comes_back_with_the_reservation(harness: Harness) -> None:
    backend = harness.open()
    bucket = Bucket(10.0, 1)
    assert backend.reserve(["k", "y"], [bucket, bucket], max_wait=None).learned is None
    backend.learn("k", LEARNED, 60.0)
    assert backend.reserve(["k", "y"], [bucket, bucket], max_wait=None).learned == LEARNED
    # It belongs to keys[0] only, and the last learn() wins.
    assert backend.reserve(["y", "k"], [bucket, bucket], max_wait=None).learned is None
    backend.learn("k", "", 60.0)
    assert backend.reserve(["k"], [bucket], max_wait=None).learned == ""
    # Another connection on the same storage (another process, for SQLite and Redis) sees it.
    backend.learn("k", LEARNED + " ", 60.0)
    assert harness.open().reserve(["k"], [bucket], max_wait=None).learned == LEARNED + " "


def test_a_learned_value_expires_after_its_ttl(harness: Harness) -> None:
    backend = harness.open()
    bucket = Bucket(0.001, 1000)
    ttl = 0.3 if harness.clock is None else 30.0  # Redis keeps real time
    backend.learn("k", LEARNED, ttl)
    backend.learn("long", LEARNED, 1000.0)
    backend.learn("forever", LEARNED, math.inf)
    assert backend.reserve(["k"], [bucket], max_wait=None).learned == LEARNED
    harness.advance(ttl + (0.2 if harness.clock is None else 0.001))
    assert backend.reserve(["k"], [bucket], max_wait=None).learned is None
    assert backend.reserve(["long"], [bucket], max_wait=None).learned == LEARNED
    assert backend.reserve(["forever"], [bucket], max_wait=None).learned == LEARNED


def test_learned_values_are_per_key_and_per_namespace(harness: Harness) -> None:
    bucket = Bucket(0.001, 1000)
    harness.open("a").learn("k", "a-k", 60.0)
    harness.open("a").learn("j", "a-j", 60.0)
    harness.open("b").learn("k", "b-k", 60.0)
    assert harness.open("a").reserve(["k"], [bucket], max_wait=None).learned == "a-k"
    assert harness.open("a").reserve(["j"], [bucket], max_wait=None).learned == "a-j"
    assert harness.open("b").reserve(["k"], [bucket], max_wait=None).learned == "b-k"
    assert harness.open("b").reserve(["j"], [bucket], max_wait=None).learned is None
    assert harness.open("c").reserve(["k"], [bucket], max_wait=None).learned is None


def test_peek_reads_the_learned_value_and_takes_nothing(harness: Harness) -> None:
    backend = harness.open()
    bucket = Bucket(10.0, 1)
    assert backend.peek("k") is None
    backend.learn("k", LEARNED, 60.0)
    assert backend.peek("k") == LEARNED
    assert harness.open().peek("k") == LEARNED  # another connection on the same storage
    assert harness.open("b").peek("k") is None  # another namespace
    assert backend.peek("y") is None
    # A read only: no slot was taken, so the first reservation still goes at once.
    assert backend.reserve(["k"], [bucket], max_wait=None).wait == pytest.approx(0.0, abs=TOL)
    ttl = 0.3 if harness.clock is None else 30.0  # Redis keeps real time
    backend.learn("k", LEARNED + " ", ttl)
    assert backend.peek("k") == LEARNED + " "
    harness.advance(ttl + (0.2 if harness.clock is None else 0.001))
    assert backend.peek("k") is None  # expired


@pytest.mark.anyio
async def test_apeek_agrees_with_peek(harness: Harness) -> None:
    backend = harness.open()
    assert await backend.apeek("k") is None
    await backend.alearn("k", LEARNED, 60.0)
    assert await backend.apeek("k") == LEARNED == backend.peek("k")
    await backend.aclose()


@pytest.mark.anyio
async def test_alearn_and_areserve_carry_the_learned_value(harness: Harness) -> None:
    backend = harness.open()
    bucket = Bucket(0.001, 1000)
    await backend.alearn("k", LEARNED, 60.0)
    assert (await backend.areserve(["k"], [bucket], max_wait=None)).learned == LEARNED
    assert backend.reserve(["k"], [bucket], max_wait=None).learned == LEARNED
    await backend.aclose()


@pytest.mark.anyio
async def test_async_methods_agree_with_sync_ones(harness: Harness) -> None:
    backend = harness.open()
    bucket = Bucket(10.0, 1)
    first = await backend.areserve(["k"], [bucket], max_wait=None)
    second = await backend.areserve(["k"], [bucket], max_wait=None)
    assert [first.wait, second.wait] == pytest.approx([0.0, 10.0], abs=TOL)
    await backend.acancel(second)
    await backend.apause(["p"], [bucket], 20.0)
    assert backend.reserve(["k"], [bucket], max_wait=None).wait == pytest.approx(10.0, abs=TOL)
    assert (await backend.areserve(["p"], [bucket], max_wait=None)).wait == pytest.approx(20.0, abs=TOL)
    await backend.aclose()


@pytest.mark.anyio
async def test_a_cancelled_request_gives_its_slot_back(harness: Harness) -> None:
    backend = harness.open()
    transport = AsyncRateLimitTransport(
        httpx.MockTransport(lambda request: httpx.Response(200)),
        rate="1/minute",
        server_counting="token_bucket",
        backend=backend,
        api_key="k",
        ip="192.0.2.8",
    )
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get("https://api.test/")).status_code == 200
        # The second request reserves the slot a minute away and sleeps: cancel it.
        with anyio.move_on_after(0.2 if harness.clock is None else 0.05) as scope:
            await client.get("https://api.test/")
        assert scope.cancelled_caught
    keys = transport._shared.limiter.keys("192.0.2.8", transport._shared.limiter.key_id("k"))
    buckets = transport._shared.limiter.buckets
    # Given back: the next caller gets that slot, not the one after it.
    assert backend.reserve(keys, buckets, max_wait=None).wait <= 60.0
    await backend.aclose()
