"""MemoryBackend against the pure model in _gcra.py, exactly (no tolerance: same clock, same floats).

The one-key reserve writes the GCRA step out instead of calling _gcra; these tests are
what keeps the two the same.
"""

from __future__ import annotations

import math
import sys
import threading

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ratelimit_client import MemoryBackend, Reservation
from ratelimit_client._gcra import Bucket, KeyState, cancel, pause, reserve


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


NOWS = st.floats(0, 1e6)
OFFSETS = st.floats(-50, 50) | st.sampled_from([0.0, math.inf, -math.inf, math.nan])
BUCKETS = st.builds(Bucket, st.floats(1e-3, 20) | st.sampled_from([0.1, 1.0, 1.2]), st.integers(1, 5))
MAX_WAITS = st.none() | st.floats(0, 60) | st.just(0.0) | st.just(-1.0)  # negative: refuses even a slot now
HOLES = st.lists(st.tuples(st.floats(-50, 50), st.floats(-50, 50)), max_size=3)


def stored(backend: MemoryBackend, key: str) -> KeyState | None:
    """The key's state as the model would hold it."""
    tat = backend._tats.get(key)
    return None if tat is None else KeyState(tat, backend._holes.get(key, ()))


def put(backend: MemoryBackend, key: str, state: KeyState | None) -> None:
    """Store ``state`` as the backend stores every state it computes."""
    if state is not None:
        backend._store(key, state)


def same(backend_state: KeyState | None, model_state: KeyState | None) -> bool:
    """The same state. A non-finite tat is forgotten: the model keeps it (and treats it as
    absent), the backend drops it."""
    if model_state is not None and not math.isfinite(model_state.tat):
        model_state = None
    return backend_state == model_state


def check_reserve(
    backend: MemoryBackend,
    model: dict[str, KeyState | None],
    keys: tuple[str, ...],
    buckets: list[Bucket],
    now: float,
    max_wait: float | None,
) -> Reservation:
    got = backend.reserve(keys, buckets, max_wait=max_wait)
    decision = reserve([model.get(k) for k in keys], buckets, now, max_wait=max_wait)
    assert got.wait == decision.wait
    assert got.granted == decision.granted
    if decision.states is None:
        assert got.charges == ()
        assert got.keys == ()
    else:
        assert got.charges == decision.charges
        assert got.keys == keys
        model.update(zip(keys, decision.states, strict=True))
    for key in keys:
        assert same(stored(backend, key), model.get(key)), key
    return got


@settings(max_examples=500, deadline=None)
@given(
    now=NOWS,
    offset=st.none() | OFFSETS,
    holes=HOLES,
    bucket=BUCKETS,
    max_wait=MAX_WAITS,
    repeat=st.integers(1, 4),
)
def test_one_key_reserve_agrees_with_the_model_exactly(
    now: float,
    offset: float | None,
    holes: list[tuple[float, float]],
    bucket: Bucket,
    max_wait: float | None,
    repeat: int,
) -> None:
    """Wait, grant, charges and stored state, from any state (absent, non-finite, with holes)."""
    backend = MemoryBackend(clock=Clock(now))
    state = None if offset is None else KeyState(now + offset, tuple((now + w, now + b) for w, b in holes))
    put(backend, "k", state)
    model: dict[str, KeyState | None] = {"k": state}
    for _ in range(repeat):  # the later calls start from what the earlier ones stored
        check_reserve(backend, model, ("k",), [bucket], now, max_wait)


@settings(max_examples=200, deadline=None)
@given(
    now=NOWS,
    offsets=st.lists(st.none() | OFFSETS, min_size=2, max_size=3),
    buckets=st.lists(BUCKETS, min_size=3, max_size=3),
    max_wait=MAX_WAITS,
)
def test_several_keys_agree_with_the_model_exactly(
    now: float, offsets: list[float | None], buckets: list[Bucket], max_wait: float | None
) -> None:
    backend = MemoryBackend(clock=Clock(now))
    keys = tuple(f"k{i}" for i in range(len(offsets)))
    model: dict[str, KeyState | None] = {}
    for key, offset in zip(keys, offsets, strict=True):
        model[key] = None if offset is None else KeyState(now + offset)
        put(backend, key, model[key])
    check_reserve(backend, model, keys, buckets[: len(keys)], now, max_wait)


KEY_SETS = st.sampled_from([("a",), ("b",), ("a", "b"), ("b", "a")])


class MemoryMachine(RuleBasedStateMachine):
    """Reserves, cancels, pauses and clock moves in any order: the backend holds exactly
    the model's state after every step, holes included."""

    @initialize(buckets=st.fixed_dictionaries({"a": BUCKETS, "b": BUCKETS}))
    def setup(self, buckets: dict[str, Bucket]) -> None:
        self.buckets = buckets
        self.clock = Clock(1000.0)
        self.backend = MemoryBackend(clock=self.clock)
        self.model: dict[str, KeyState | None] = {}
        self.pending: list[Reservation] = []

    @rule(seconds=st.floats(0, 5))
    def advance(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule(keys=KEY_SETS, max_wait=MAX_WAITS)
    def take(self, keys: tuple[str, ...], max_wait: float | None) -> None:
        buckets = [self.buckets[k] for k in keys]
        got = check_reserve(self.backend, self.model, keys, buckets, self.clock.now, max_wait)
        if got.granted:
            self.pending.append(got)

    @precondition(lambda self: self.pending)
    @rule(index=st.integers(0, 1000))
    def give_back(self, index: int) -> None:
        got = self.pending.pop(index % len(self.pending))
        charges = got.charges  # the cancel spends them
        self.backend.cancel(got)
        for key, charge in zip(got.keys, charges, strict=True):
            self.model[key] = cancel(self.model.get(key), charge, self.clock.now)

    @rule(keys=KEY_SETS, seconds=st.floats(0, 30))
    def server_pause(self, keys: tuple[str, ...], seconds: float) -> None:
        now = self.clock.now
        self.backend.pause(keys, [self.buckets[k] for k in keys], seconds)
        for key in keys:
            self.model[key] = pause(self.model.get(key), self.buckets[key], now + seconds, now)

    @invariant()
    def same_state(self) -> None:
        for key in ("a", "b"):
            assert same(stored(self.backend, key), self.model.get(key)), key
        assert set(self.backend._holes) <= set(self.backend._tats)


MemoryMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
test_memory_state_machine = MemoryMachine.TestCase


def test_a_refused_reserve_stores_nothing() -> None:
    backend = MemoryBackend(clock=Clock(5.0))
    bucket = Bucket(10.0, 1)
    assert backend.reserve(["k"], [bucket], max_wait=0).granted
    refused = backend.reserve(["k"], [bucket], max_wait=1.0)
    assert refused == Reservation(10.0, False)
    assert backend._tats == {"k": 15.0}


def test_holes_are_kept_apart_and_go_with_their_key() -> None:
    clock = Clock(0.0)
    backend = MemoryBackend(clock=clock)
    bucket = Bucket(1.0, 1)
    first, second = (backend.reserve(["k"], [bucket], max_wait=None) for _ in range(2))
    charges = first.charges
    backend.cancel(first)  # not the tail: a hole
    assert backend._holes == {"k": charges}
    backend.cancel(second)  # the tail: collapses through the hole
    assert backend._tats == {"k": 0.0}
    assert backend._holes == {}


def test_prune_drops_idle_keys_with_their_holes() -> None:
    clock = Clock(0.0)
    backend = MemoryBackend(clock=clock)
    bucket = Bucket(1.0, 1)
    first = backend.reserve(["held"], [bucket], max_wait=None)
    backend.reserve(["held"], [bucket], max_wait=None)
    backend.cancel(first)
    assert "held" in backend._holes
    clock.now = 10.0
    for n in range(1023):
        backend.reserve([f"k{n}"], [bucket], max_wait=None)
    # 1024 keys: the sweep ran, and only the keys charged at 10.0 (tat 11.0) remain.
    assert "held" not in backend._tats
    assert backend._holes == {}
    assert len(backend._tats) == 1023


def test_prune_runs_when_several_keys_grow_the_table() -> None:
    clock = Clock(0.0)
    backend = MemoryBackend(clock=clock)
    bucket = Bucket(1.0, 1)
    for n in range(512):
        backend.reserve([f"old{n}"], [bucket], max_wait=None)
    clock.now = 10.0
    # Two new keys per reserve, through the several-keys path: the reserve that brings
    # the table to 1024 keys sweeps out the 512 charged at 0.0, idle by now.
    for n in range(256):
        backend.reserve([f"a{n}", f"b{n}"], [bucket, bucket], max_wait=None)
    assert not any(key.startswith("old") for key in backend._tats)
    assert len(backend._tats) == 512


def test_learned_value_comes_with_the_reservation() -> None:
    clock = Clock(0.0)
    backend = MemoryBackend(clock=clock)
    bucket = Bucket(1.0, 1)
    backend.learn("k", "value", 5.0)
    assert backend.reserve(["k"], [bucket], max_wait=None).learned == "value"
    assert backend.reserve(["k", "other"], [bucket, bucket], max_wait=None).learned == "value"
    assert backend.reserve(["other"], [bucket], max_wait=None).learned is None
    clock.now = 5.0
    assert backend.reserve(["k"], [bucket], max_wait=None).learned is None


def test_threads_sharing_a_key_lose_no_reservation() -> None:
    """Every reserve from several threads is charged once: the slots are all distinct and
    the tat is one interval per reservation ahead of the first."""
    backend = MemoryBackend(clock=Clock(0.0))  # the clock stands still: every slot queues
    bucket = Bucket(1.0, 1)
    per_thread, threads = 2000, 4
    charges: list[tuple[tuple[float, float], ...]] = []

    def worker() -> None:
        mine = [backend.reserve(["k"], [bucket], max_wait=None).charges for _ in range(per_thread)]
        charges.extend(mine)

    started = [threading.Thread(target=worker) for _ in range(threads)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython allows: races show
    try:
        for thread in started:
            thread.start()
        for thread in started:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    written = sorted(charge[0][0] for charge in charges)
    assert written == [float(n) for n in range(1, per_thread * threads + 1)]
    assert backend._tats == {"k": float(per_thread * threads)}
