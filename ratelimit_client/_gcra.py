"""GCRA over one or several keys, as pure functions of (state, now) → (decision, new state).

One key's state is its theoretical arrival time ``tat``: with emission interval ``T``
and tolerance ``τ = burst·T``, a request at ``now`` is admitted at
``slot = max(tat, now) + T - τ`` (at once when that is not in the future), computed as
``max(tat, now) - lead`` with ``lead = (burst - 1)·T``: one rounding, so a fresh key at
burst 1 gets exactly ``now`` and not ``now`` plus an ulp (a needless sleep). Callers
reserve a slot, store the new ``tat`` even when the slot is in the future, and sleep
until it, so the next caller queues behind them: first come, first served, no polling.

Several keys (a request under several limits): the slot is the latest of the keys'
slots, and every key is charged *at that slot*, so no key sees two requests closer than
it allows.

Cancelling a reservation gives its capacity back exactly: a key whose ``tat`` is still
the one this reservation wrote goes back to the value before it; otherwise the
reservation becomes a *hole*, remembered until the reservations after it are cancelled
too (then the tail collapses through it) or its time has passed. Every backend stores
the same state, so they all agree with this module.

A state also keeps the clock reading it was written at (``stamp``). A shared wall clock
can step back (a reboot, an NTP step); a state stamped after ``now`` shows it did, and
its times are moved back by the step, so the queue keeps its distance from the clock:
no stall for the length of the step, and no burst either.
"""

from __future__ import annotations

import dataclasses
import math
import typing

__all__ = ["Bucket", "Decision", "KeyState", "cancel", "pause", "reserve"]

MAX_HOLES = 32


@dataclasses.dataclass(frozen=True, slots=True)
class Bucket:
    """One limit's parameters: ``interval`` seconds between requests, ``burst`` at once."""

    interval: float
    burst: int = 1
    # How far a key's tat may run ahead of now with a request still going at once:
    # (burst - 1)·T, computed once (the memory backend reads it on every request).
    lead: float = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lead", (self.burst - 1) * self.interval)

    @property
    def tolerance(self) -> float:
        return self.burst * self.interval


# KeyState and Decision are built on every request: plain slotted dataclasses (no
# object.__setattr__ per field, as frozen ones do), immutable by convention, hashable
# on their fields like the frozen ones were.
@dataclasses.dataclass(slots=True, unsafe_hash=True)
class KeyState:
    """A key's stored state: ``tat`` and the holes left by cancelled reservations (never mutated)."""

    tat: float
    holes: tuple[tuple[float, float], ...] = ()  # (tat it wrote, tat before it)
    # The clock when it was written (see the module docstring); not part of its value. A
    # monotonic clock never steps, so the memory backend keeps none.
    stamp: float = dataclasses.field(default=-math.inf, compare=False)


@dataclasses.dataclass(slots=True, unsafe_hash=True)
class Decision:
    """A reservation: go after ``wait`` seconds. ``states`` is None when it was refused (never mutated)."""

    wait: float
    states: tuple[KeyState, ...] | None
    # Per key, (tat written, tat before): what cancel() needs to give the slot back.
    charges: tuple[tuple[float, float], ...] = ()

    @property
    def granted(self) -> bool:
        return self.states is not None


def _fresh(state: KeyState | None, now: float) -> KeyState | None:
    """``state`` as of ``now``: None if it holds no usable time, its times moved back by
    the step if the clock stepped back since it was written."""
    if state is None or not math.isfinite(state.tat):
        return None
    return _stepped_back(state, now) if state.stamp > now else state


def _stepped_back(state: KeyState, now: float) -> KeyState | None:
    step = state.stamp - now
    if not math.isfinite(step):
        return None  # a stamp no clock gives: a corrupt row
    holes = tuple((written - step, before - step) for written, before in state.holes)
    return KeyState(state.tat - step, holes, now)


def reserve(
    states: typing.Sequence[KeyState | None],
    buckets: typing.Sequence[Bucket],
    now: float,
    *,
    max_wait: float | None = None,
    cost: int = 1,
) -> Decision:
    """Reserve the next slot across all ``buckets`` at once (``states`` in the same order).

    When the slot is more than ``max_wait`` seconds away nothing is charged and the
    decision is refused, so the caller can fail fast without burning capacity.
    """
    # One pass finds each key's tat before this request and the slot (the latest of the
    # keys' own slots, never before now); a second charges every key at that slot.
    if len(states) != len(buckets):
        # Checked once here: zip(strict=True) costs more than the rest of a one-key step.
        raise ValueError(f"{len(states)} states for {len(buckets)} buckets: they must match")
    slot = now
    holes: tuple[tuple[float, float], ...]
    befores: list[tuple[float, tuple[tuple[float, float], ...]]] = []
    for stored, bucket in zip(states, buckets):  # noqa: B905 - lengths checked above
        # _fresh's steps written out for the common case: this runs on every request.
        fresh = _stepped_back(stored, now) if stored is not None and stored.stamp > now else stored
        if fresh is None or not math.isfinite(fresh.tat):
            before, holes = now, ()
        else:
            before, holes = fresh.tat, fresh.holes
        interval = bucket.interval
        key_slot = (before if before > now else now) + (cost - bucket.burst) * interval
        if key_slot > slot:  # noqa: PLR1730 - a builtin call costs more, on every request
            slot = key_slot
        befores.append((before, holes))
    wait = slot - now
    if max_wait is not None and wait > max_wait:
        return Decision(wait, None)
    new_states: list[KeyState] = []
    charges: list[tuple[float, float]] = []
    for (before, holes), bucket in zip(befores, buckets):  # noqa: B905 - lengths checked above
        tat = (before if before > slot else slot) + cost * bucket.interval
        new_states.append(KeyState(tat, _live_holes(holes, now) if holes else (), now))
        charges.append((tat, before))
    return Decision(wait, tuple(new_states), tuple(charges))


def cancel(state: KeyState | None, charge: tuple[float, float], now: float) -> KeyState | None:
    """Give back one key's charge from a reservation that will not be used.

    After a clock step the charge no longer matches any stored time: it becomes a hole
    that never closes, so nothing is given back (never more than was taken).
    """
    state = _fresh(state, now)
    if state is None:
        return None
    written, before = charge
    if state.tat != written:
        holes = _live_holes((*state.holes, charge), now)
        return KeyState(state.tat, holes[-MAX_HOLES:], now)
    tat = before
    earlier = dict(state.holes)
    # The reservations behind this one that were cancelled earlier can go too.
    while tat in earlier:
        tat = earlier.pop(tat)
    return KeyState(tat, _live_holes(tuple(earlier.items()), now), now)


def pause(state: KeyState | None, bucket: Bucket, until: float, now: float) -> KeyState:
    """Let no request of this key go before ``until``, then one each interval."""
    # A tat of until + τ - T makes the next slot exactly ``until``: waiters wake one
    # interval apart instead of all at once when the pause ends.
    floor = until + bucket.lead
    state = _fresh(state, now)
    if state is None:
        return KeyState(max(floor, now), (), now)
    if state.tat >= floor:
        # The queue already reaches past the pause, but cancelling it must not undo the
        # pause: a tat one ulp higher matches no pending charge, so cancels leave holes
        # instead of rolling the tat back below ``floor``. The old holes can never match
        # again either, so they go.
        return KeyState(math.nextafter(state.tat, math.inf), (), now)
    return KeyState(floor, (), now)


def _live_holes(holes: tuple[tuple[float, float], ...], now: float) -> tuple[tuple[float, float], ...]:
    # A hole whose tat has passed can no longer change any decision: a tat at or
    # before now already means a full bucket.
    return tuple(h for h in holes if h[0] > now)
