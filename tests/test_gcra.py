"""GCRA over one or several keys (ratelimit_client._gcra), driven by an explicit clock.

The window bound checked by the property tests: GCRA with emission interval ``T`` and
burst ``b`` admits a request at ``slot`` only when ``tat + T - b·T <= slot``, and every
admitted request raises ``tat`` by at least ``T``. So for admitted slots
``s_1 <= … <= s_n`` of one key, ``s_n >= s_1 + (n - b)·T``, i.e. any *closed* window
``[t, t + D]`` holds at most ``b + floor(D / T)`` slots. Checking every pair
``(s_i, s_j)`` checks every window, since the tightest windows start and end on slots.
Float sums make a slot a few ulps early, so ``D / T`` gets ``EPSILON`` (1e-9 intervals,
far above the ~1e-13 rounding of these magnitudes and far below any real gap) before
the floor.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ratelimit_client._gcra import MAX_HOLES, Bucket, Decision, KeyState, cancel, pause, reserve

EPSILON = 1e-9


def take(
    states: list[KeyState | None],
    buckets: typing.Sequence[Bucket],
    now: float,
    **options: typing.Any,
) -> Decision:
    """Reserve and store the new states in place, as a backend would."""
    decision = reserve(states, buckets, now, **options)
    if decision.states is not None:
        states[:] = decision.states
    return decision


def window_violation(slots: typing.Iterable[float], bucket: Bucket) -> tuple[float, float, int] | None:
    """The first closed window holding more than ``burst + floor(D / T)`` slots, if any."""
    ordered = sorted(slots)
    for i, j in itertools.combinations(range(len(ordered)), 2):
        count = j - i + 1
        span = ordered[j] - ordered[i]
        if count > bucket.burst + math.floor(span / bucket.interval + EPSILON):
            return ordered[i], ordered[j], count
    return None


# --- one key ---------------------------------------------------------------------------


def test_first_request_goes_at_once_then_queue_is_evenly_spaced() -> None:
    bucket = Bucket(interval=1.5)
    states: list[KeyState | None] = [None]
    waits = [take(states, [bucket], 10.0).wait for _ in range(5)]
    assert waits == [0.0, 1.5, 3.0, 4.5, 6.0]
    assert states == [KeyState(17.5)]


INTERVALS = st.floats(1e-3, 1e4)
NOWS = st.floats(0, 1e10)


@given(interval=INTERVALS, burst=st.integers(1, 5), now=NOWS)
def test_a_fresh_key_goes_at_exactly_now(interval: float, burst: int, now: float) -> None:
    """Not now plus an ulp: a wait of 1e-14 s still costs a sleep and counts as a wait."""
    bucket = Bucket(interval, burst)
    assert reserve([None], [bucket], now).wait == 0.0
    assert reserve([KeyState(now)], [Bucket(interval)], now + interval).wait == 0.0


@given(interval=INTERVALS, now=NOWS, seconds=st.floats(0, 1e4))
def test_a_pause_ends_at_exactly_its_until(interval: float, now: float, seconds: float) -> None:
    bucket = Bucket(interval)
    until = now + seconds
    assert reserve([pause(None, bucket, until, now)], [bucket], until).wait == 0.0


def test_burst_goes_at_once_then_one_per_interval() -> None:
    bucket = Bucket(interval=2.0, burst=3)
    states: list[KeyState | None] = [None]
    waits = [take(states, [bucket], 0.0).wait for _ in range(6)]
    assert waits == [0.0, 0.0, 0.0, 2.0, 4.0, 6.0]


def test_capacity_refills_with_time_but_never_beyond_burst() -> None:
    bucket = Bucket(interval=1.0, burst=2)
    states: list[KeyState | None] = [None]
    for _ in range(4):
        take(states, [bucket], 0.0)
    # tat = 4: at t=3 one slot has refilled (slot = tat + T - 2T = 3); after a long idle
    # only the burst (two) is free, never more.
    assert take(states, [bucket], 3.0).wait == 0.0
    assert take(states, [bucket], 3.0).wait == 1.0
    waits = [take(states, [bucket], 1000.0).wait for _ in range(3)]
    assert waits == [0.0, 0.0, 1.0]


def test_admit_and_deny_boundary_is_exact() -> None:
    bucket = Bucket(interval=1.0)
    state = reserve([None], [bucket], 0.0).states
    assert state is not None
    assert reserve(state, [bucket], 0.999).wait == pytest.approx(0.001)
    assert reserve(state, [bucket], 1.0).wait == 0.0
    assert reserve(state, [bucket], 1.5).wait == 0.0


def test_decision_records_the_charge_per_key() -> None:
    decision = reserve([KeyState(5.0)], [Bucket(2.0)], 4.0)
    # slot = max(5, 4) + 2 - 2 = 5: wait 1, tat 7, and the tat it replaced was 5.
    assert decision == Decision(1.0, (KeyState(7.0),), ((7.0, 5.0),))
    assert decision.granted


def test_cost_charges_several_intervals() -> None:
    bucket = Bucket(interval=1.0, burst=3)
    states: list[KeyState | None] = [None]
    assert take(states, [bucket], 0.0, cost=2).wait == 0.0
    assert states == [KeyState(2.0)]
    # slot = 2 + 2·1 - 3 = 1.
    assert take(states, [bucket], 0.0, cost=2).wait == 1.0
    assert states == [KeyState(4.0)]


def test_states_and_buckets_must_match_in_length() -> None:
    with pytest.raises(ValueError, match="must match"):
        reserve([None, None], [Bucket(1.0)], 0.0)


# --- several keys ----------------------------------------------------------------------


def test_several_keys_slot_is_the_latest_and_all_are_charged_at_it() -> None:
    fast, slow = Bucket(interval=1.0), Bucket(interval=10.0)
    states: list[KeyState | None] = [KeyState(3.0), KeyState(20.0)]
    decision = take(states, [fast, slow], 0.0)
    # fast alone would go at 3, slow at 20: the request goes at 20 and the fast key is
    # charged there, so it sees no two requests closer than one interval.
    assert decision.wait == 20.0
    assert states == [KeyState(21.0), KeyState(30.0)]
    assert decision.charges == ((21.0, 3.0), (30.0, 20.0))


def test_several_keys_each_keep_their_own_bound() -> None:
    per_second, per_ten = Bucket(interval=1.0, burst=2), Bucket(interval=10.0, burst=3)
    states: list[KeyState | None] = [None, None]
    waits = [take(states, [per_second, per_ten], 0.0).wait for _ in range(5)]
    # Burst of the stricter burst (2), the third paced by the per-second key, then the
    # per-ten key binds: its burst of 3 is spent, one each ten seconds after that.
    assert waits == [0.0, 0.0, 1.0, 10.0, 20.0]


# --- max_wait ---------------------------------------------------------------------------


def test_max_wait_refusal_charges_nothing() -> None:
    bucket = Bucket(interval=1.0)
    states: list[KeyState | None] = [KeyState(5.0), None]
    refused = reserve(states, [bucket, bucket], 0.0, max_wait=4.5)
    assert not refused.granted
    assert refused.wait == 5.0
    assert refused.states is None
    assert refused.charges == ()
    assert states == [KeyState(5.0), None]


def test_max_wait_admits_a_wait_of_exactly_max_wait() -> None:
    decision = reserve([KeyState(5.0)], [Bucket(1.0)], 0.0, max_wait=5.0)
    assert decision.granted
    assert decision.wait == 5.0


# --- cancel -----------------------------------------------------------------------------


def test_cancel_of_the_tail_gives_its_slot_back_exactly() -> None:
    bucket = Bucket(interval=1.0)
    states: list[KeyState | None] = [None]
    take(states, [bucket], 0.0)
    before = list(states)
    last = take(states, [bucket], 0.0)
    states[0] = cancel(states[0], last.charges[0], 0.0)
    assert states == before
    assert take(states, [bucket], 0.0).wait == last.wait


def test_cancel_in_the_middle_leaves_a_hole_until_the_tail_goes() -> None:
    bucket = Bucket(interval=1.0)
    states: list[KeyState | None] = [None]
    first, middle, tail = (take(states, [bucket], 0.0) for _ in range(3))
    states[0] = cancel(states[0], middle.charges[0], 0.0)
    # The tail still holds its slot: the tat cannot move, the hole is remembered.
    assert states == [KeyState(3.0, ((2.0, 1.0),))]
    states[0] = cancel(states[0], tail.charges[0], 0.0)
    assert states == [KeyState(1.0)]
    states[0] = cancel(states[0], first.charges[0], 0.0)
    assert states == [KeyState(0.0)]


def test_cancel_of_an_unknown_key_state_is_none() -> None:
    assert cancel(None, (1.0, 0.0), 0.0) is None


def test_holes_in_the_past_are_forgotten() -> None:
    bucket = Bucket(interval=1.0)
    states: list[KeyState | None] = [None]
    _, middle, _ = (take(states, [bucket], 0.0) for _ in range(3))
    state = cancel(states[0], middle.charges[0], 0.0)
    assert state is not None
    assert state.holes == ((2.0, 1.0),)
    # At t=2 the hole's tat has passed: a tat at or before now already means "free".
    after = reserve([state], [bucket], 2.5).states
    assert after is not None
    assert after[0].holes == ()


@given(order=st.permutations(range(12)), burst=st.integers(1, 3), now=st.floats(0, 1e6))
def test_cancels_in_any_order_collapse_back_to_the_original_state(order: list[int], burst: int, now: float) -> None:
    bucket = Bucket(interval=0.7, burst=burst)
    start = reserve([None], [bucket], now).states
    assert start is not None
    states: list[KeyState | None] = list(start)
    decisions = [take(states, [bucket], now) for _ in order]
    for index in order:
        states[0] = cancel(states[0], decisions[index].charges[0], now)
    assert states == list(start)


def test_more_holes_than_kept_never_mint_capacity() -> None:
    bucket = Bucket(interval=1.0)
    states: list[KeyState | None] = [None]
    decisions = [take(states, [bucket], 0.0) for _ in range(MAX_HOLES + 10)]
    for decision in decisions[:-1]:  # every one but the tail: all become holes
        states[0] = cancel(states[0], decision.charges[0], 0.0)
    state = states[0]
    assert state is not None
    assert len(state.holes) == MAX_HOLES
    state = cancel(state, decisions[-1].charges[0], 0.0)
    assert state is not None
    # Only the newest MAX_HOLES holes (tats 10..41) were kept: the tail collapses through
    # them down to 9, where the dropped ones would have let it go on. Capacity is lost,
    # never minted.
    assert state.tat == len(decisions) - 1 - MAX_HOLES
    assert state.holes == ()


# --- pause ------------------------------------------------------------------------------


@pytest.mark.parametrize("burst", [1, 4])
def test_pause_puts_the_next_slot_exactly_at_until_then_one_per_interval(burst: int) -> None:
    bucket = Bucket(interval=2.0, burst=burst)
    states: list[KeyState | None] = [pause(None, bucket, until=30.0, now=0.0)]
    waits = [take(states, [bucket], 0.0).wait for _ in range(3)]
    assert waits == [30.0, 32.0, 34.0]


def test_pause_of_a_known_key_keeps_a_longer_queue() -> None:
    bucket = Bucket(interval=1.0)
    assert pause(KeyState(3.0), bucket, until=10.0, now=0.0) == KeyState(10.0)
    longer = pause(KeyState(50.0), bucket, until=10.0, now=0.0)
    assert longer.tat >= 50.0
    assert reserve([longer], [bucket], 0.0).wait == pytest.approx(50.0)


def test_pause_in_the_past_changes_nothing_for_an_idle_key() -> None:
    bucket = Bucket(interval=1.0)
    assert reserve([pause(None, bucket, until=-5.0, now=0.0)], [bucket], 0.0).wait == 0.0


def test_cancelling_a_queue_does_not_undo_a_pause_under_it() -> None:
    # Five waiters queued to t=4; the first got a 429 and paused the key until t=2.
    # When the other four are cancelled, the key must still wait for the pause.
    bucket = Bucket(interval=1.0)
    states: list[KeyState | None] = [None]
    decisions = [take(states, [bucket], 0.0) for _ in range(5)]
    states[0] = pause(states[0], bucket, until=2.0, now=0.0)
    for decision in reversed(decisions[1:]):
        states[0] = cancel(states[0], decision.charges[0], 0.0)
    assert take(states, [bucket], 0.0).wait >= 2.0


# --- clock steps ------------------------------------------------------------------------


def test_a_state_written_after_now_is_moved_back_by_the_step() -> None:
    # Written at 3600, read at 0: the wall clock stepped back an hour since. The queue
    # keeps its distance from the clock (10 s), holes too, rather than being waited out
    # for an hour or forgotten.
    bucket = Bucket(interval=1.0)
    stepped = reserve([KeyState(3610.0, ((3609.0, 3608.0),), 3600.0)], [bucket], 0.0)
    assert stepped.wait == 10.0
    assert stepped.states == (KeyState(11.0, ((9.0, 8.0),)),)
    assert stepped.states is not None
    assert stepped.states[0].stamp == 0.0  # written now
    # A queue however deep, written at or before now, is kept as it is.
    assert reserve([KeyState(5000.0, (), 0.0)], [bucket], 0.0).wait == 5000.0


def test_a_pause_and_a_cancel_after_a_step_back_keep_to_the_clock() -> None:
    bucket = Bucket(interval=1.0)
    before_step = KeyState(3610.0, (), 3600.0)
    assert pause(before_step, bucket, 20.0, 0.0) == KeyState(20.0)  # the queue moved back to 10
    # A charge taken before the step matches nothing now: nothing is given back.
    cancelled = cancel(before_step, (3610.0, 3609.0), 0.0)
    assert cancelled is not None
    assert cancelled.tat == 10.0
    assert cancelled.stamp == 0.0


@pytest.mark.parametrize("tat", [math.inf, -math.inf, math.nan])
def test_a_non_finite_tat_is_forgotten(tat: float) -> None:
    decision = reserve([KeyState(tat)], [Bucket(1.0)], 7.0)
    assert decision.wait == 0.0
    assert decision.states == (KeyState(8.0),)


# --- properties -------------------------------------------------------------------------

INTERVALS = st.sampled_from([0.1, 0.25, 1.0, 1.2, 3.0])
BUCKETS = st.lists(st.builds(Bucket, INTERVALS, st.integers(1, 4)), min_size=1, max_size=3)


@dataclasses.dataclass
class Granted:
    slot: float
    keys: tuple[int, ...]
    charges: tuple[tuple[float, float], ...]
    cancelled: bool = False


class Model:
    """Keys with buckets, a clock that never goes back, and every granted reservation."""

    def __init__(self, buckets: list[Bucket]) -> None:
        self.buckets = buckets
        self.states: list[KeyState | None] = [None] * len(buckets)
        self.now = 0.0
        self.granted: list[Granted] = []

    def reserve(self, keys: tuple[int, ...], max_wait: float | None) -> Granted | None:
        decision = reserve([self.states[k] for k in keys], [self.buckets[k] for k in keys], self.now, max_wait=max_wait)
        if decision.states is None:
            assert max_wait is not None
            assert decision.wait > max_wait
            assert decision.charges == ()
            return None
        assert decision.wait >= 0
        for k, state in zip(keys, decision.states, strict=True):
            self.states[k] = state
        grant = Granted(self.now + decision.wait, keys, decision.charges)
        self.granted.append(grant)
        return grant

    def cancel(self, index: int) -> None:
        live = [g for g in self.granted if not g.cancelled]
        if not live:
            return
        grant = live[index % len(live)]
        grant.cancelled = True
        for k, charge in zip(grant.keys, grant.charges, strict=True):
            self.states[k] = cancel(self.states[k], charge, self.now)

    def check_windows(self) -> None:
        for k, bucket in enumerate(self.buckets):
            slots = [g.slot for g in self.granted if not g.cancelled and k in g.keys]
            assert window_violation(slots, bucket) is None, (k, bucket, sorted(slots))


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0, 5)),
        st.tuples(st.just("reserve"), st.lists(st.integers(0, 2), min_size=1, max_size=3, unique=True)),
        st.tuples(st.just("reserve_max_wait"), st.floats(0, 3)),
        st.tuples(st.just("cancel"), st.integers(0, 1000)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(buckets=BUCKETS, operations=OPERATIONS)
def test_any_sequence_keeps_every_window_within_burst_plus_rate(
    buckets: list[Bucket], operations: list[tuple[str, typing.Any]]
) -> None:
    model = Model(buckets)
    for name, argument in operations:
        if name == "advance":
            model.now += argument
        elif name == "reserve":
            keys = tuple(k for k in argument if k < len(buckets)) or (0,)
            model.reserve(keys, None)
        elif name == "reserve_max_wait":
            model.reserve(tuple(range(len(buckets))), argument)
        else:
            model.cancel(argument)
    model.check_windows()


class GcraMachine(RuleBasedStateMachine):
    """Reserves, cancels, pauses and clock moves in any order keep the window bound, and
    no reservation made after a pause goes before the pause ends."""

    @initialize(buckets=BUCKETS)
    def setup(self, buckets: list[Bucket]) -> None:
        self.model = Model(buckets)
        self.paused_until = [-math.inf] * len(buckets)
        # Per key, the reservations made since its latest pause began.
        self.since_pause: list[list[Granted]] = [[] for _ in buckets]

    def _key(self, data: st.DataObject) -> int:
        return data.draw(st.integers(0, len(self.model.buckets) - 1))

    @rule(seconds=st.floats(0, 5))
    def advance(self, seconds: float) -> None:
        self.model.now += seconds

    @rule(data=st.data(), max_wait=st.none() | st.floats(0, 4))
    def take_slot(self, data: st.DataObject, max_wait: float | None) -> None:
        size = len(self.model.buckets)
        keys = data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=size, unique=True))
        grant = self.model.reserve(tuple(keys), max_wait)
        if grant is not None:
            for k in keys:
                self.since_pause[k].append(grant)

    @precondition(lambda self: any(not g.cancelled for g in self.model.granted))
    @rule(index=st.integers(0, 1000))
    def give_back(self, index: int) -> None:
        self.model.cancel(index)

    @rule(data=st.data(), seconds=st.floats(0, 10))
    def server_pause(self, data: st.DataObject, seconds: float) -> None:
        key = self._key(data)
        until = self.model.now + seconds
        model = self.model
        model.states[key] = pause(model.states[key], model.buckets[key], until, model.now)
        if until > self.paused_until[key]:
            self.paused_until[key] = until
            self.since_pause[key] = []

    @invariant()
    def windows_hold(self) -> None:
        self.model.check_windows()

    @invariant()
    def pauses_hold(self) -> None:
        for k, until in enumerate(self.paused_until):
            for grant in self.since_pause[k]:
                if not grant.cancelled:
                    assert grant.slot >= until - EPSILON * self.model.buckets[k].interval, (grant, until)


GcraMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_gcra_state_machine = GcraMachine.TestCase


# --- reserve against its two-pass definition ---------------------------------------------


def _step(stored: KeyState | None, bucket: Bucket, now: float, cost: int, at: float) -> tuple[float, KeyState, float]:
    """One key: its slot (no earlier than ``at``), its state charged at that slot, its tat before."""
    holes: tuple[tuple[float, float], ...]
    if stored is not None and stored.stamp > now:  # the clock stepped back: all times move back
        step = stored.stamp - now
        stored = KeyState(stored.tat - step, tuple((w - step, b - step) for w, b in stored.holes))
    if stored is None or not math.isfinite(stored.tat):
        before, holes = now, ()
    else:
        before, holes = stored.tat, stored.holes
    slot = max(max(before, now) + (cost - bucket.burst) * bucket.interval, now, at)
    live = tuple(h for h in holes if h[0] > now)
    return slot, KeyState(max(before, slot) + cost * bucket.interval, live), before


def two_pass_reserve(
    states: list[KeyState | None], buckets: list[Bucket], now: float, max_wait: float | None, cost: int
) -> Decision:
    """The definition: the slot is the latest of the keys' own slots; then run each key's
    step again with its slot pushed to that one."""
    slot = max([now] + [_step(s, b, now, cost, -math.inf)[0] for s, b in zip(states, buckets, strict=True)])
    if max_wait is not None and slot - now > max_wait:
        return Decision(slot - now, None)
    steps = [_step(s, b, now, cost, slot) for s, b in zip(states, buckets, strict=True)]
    return Decision(slot - now, tuple(s for _, s, _ in steps), tuple((s.tat, before) for _, s, before in steps))


OFFSETS = st.floats(-100, 100) | st.sampled_from([0.0, math.inf, -math.inf, math.nan])
STATES = st.none() | st.builds(
    KeyState,
    OFFSETS,
    st.lists(st.tuples(st.floats(-100, 100), st.floats(-100, 100)), max_size=3).map(tuple),
    st.floats(-100, 100),  # its stamp: after now is a clock that stepped back
)
ANY_BUCKETS = st.builds(Bucket, st.floats(1e-3, 50) | INTERVALS, st.integers(1, 6))


@settings(max_examples=500, deadline=None)
@given(
    pairs=st.lists(st.tuples(STATES, ANY_BUCKETS), min_size=1, max_size=4),
    now=st.floats(0, 1e6),
    max_wait=st.none() | st.floats(0, 300),
    cost=st.integers(1, 3),
)
def test_reserve_is_its_two_pass_definition_exactly(
    pairs: list[tuple[KeyState | None, Bucket]], now: float, max_wait: float | None, cost: int
) -> None:
    # States are drawn relative to now, so that they straddle it.
    states = [
        None if s is None else KeyState(now + s.tat, tuple((now + w, now + b) for w, b in s.holes), now + s.stamp)
        for s, _ in pairs
    ]
    buckets = [b for _, b in pairs]
    got = reserve(states, buckets, now, max_wait=max_wait, cost=cost)
    assert got == two_pass_reserve(states, buckets, now, max_wait, cost)
