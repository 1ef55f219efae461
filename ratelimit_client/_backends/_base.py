"""The interface every limiter backend implements."""

from __future__ import annotations

import dataclasses
import threading
import typing

if typing.TYPE_CHECKING:
    from .._gcra import Bucket

__all__ = ["Backend", "Reservation", "spend"]


# Built on every request: a plain slotted dataclass, since a frozen one pays an
# object.__setattr__ per field. Not hashable: cancelling one changes it (see spend).
@dataclasses.dataclass(slots=True)
class Reservation:
    """A slot taken across ``keys``: go after ``wait`` seconds, or give it back.

    ``granted`` is False when the slot was further than the caller's ``max_wait``; then
    nothing was taken. ``charges`` is what :meth:`Backend.cancel` needs to undo it; a
    cancel empties them, so cancelling the same reservation again gives nothing back.
    Otherwise never changed: derive a changed copy with :func:`dataclasses.replace`.
    """

    wait: float
    granted: bool
    keys: tuple[str, ...] = ()
    charges: tuple[tuple[float, float], ...] = ()
    # Taken from a local fallback while the shared backend was unreachable.
    fallback: bool = False
    # What learn() last stored for keys[0] and has not expired: the fleet's learned rate,
    # read in the same atomic step so that learning costs no extra round trip.
    learned: str | None = None


_spending = threading.Lock()


def spend(reservation: Reservation) -> tuple[tuple[str, ...], tuple[tuple[float, float], ...]] | None:
    """The keys and charges a cancel gives back, once: None if there are none (refused, or
    cancelled before). Every backend's cancel starts here.

    A second give-back cannot be told from a first by the stored state alone: a later
    reservation may land on the same tat, and undoing the old one again would undo it.
    """
    with _spending:  # two threads cancelling one reservation: one of them gives it back
        charges = reservation.charges
        if not reservation.granted or not charges:
            return None
        reservation.charges = ()
    return reservation.keys, charges


@typing.runtime_checkable
class Backend(typing.Protocol):
    """Shared limiter state. Each operation is one atomic step over all its keys.

    Keys are opaque strings (already hashed: never a raw API key). Sync and async
    callers use the same object: ``reserve``/``areserve`` and so on.
    """

    def reserve(
        self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], *, max_wait: float | None
    ) -> Reservation: ...

    def cancel(self, reservation: Reservation) -> None: ...

    def pause(self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], seconds: float) -> None: ...

    def learn(self, key: str, value: str, ttl: float) -> None:
        """Store ``value`` (opaque text) for ``key`` for ``ttl`` seconds; reserve() returns it."""
        ...

    def peek(self, key: str) -> str | None:
        """What learn() stored for ``key``, if it has not expired: a read, taking nothing."""
        ...

    def close(self) -> None: ...

    async def areserve(
        self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], *, max_wait: float | None
    ) -> Reservation: ...

    async def acancel(self, reservation: Reservation) -> None: ...

    async def apause(self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], seconds: float) -> None: ...

    async def alearn(self, key: str, value: str, ttl: float) -> None: ...

    async def apeek(self, key: str) -> str | None: ...

    async def aclose(self) -> None: ...
