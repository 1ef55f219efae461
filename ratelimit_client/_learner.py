"""One engine's view of the fleet's learned rates: which bucket to reserve with, what to learn.

The learned rate lives in the backend beside the bucket, so every process and host that
shares a key moves together. Each reservation brings back the stored value at no extra
cost; this class caches it, paces the tier's limit at it, and turns each response into
an update (via the pure rules in :mod:`._adaptive`) when the response changes anything.
"""

from __future__ import annotations

import dataclasses
import threading
import typing

from ._adaptive import AdaptiveConfig, Learned, observe, rate_at, update
from ._gcra import Bucket

if typing.TYPE_CHECKING:
    from ._headers import ResetFormat

__all__ = ["Change", "Learner", "format_rate"]

_CACHE_LIMIT = 4096


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """A new learned value to store for ``ttl`` seconds, and how to tell the user.

    ``message`` is None when only the pause changed: nothing to tell.
    """

    learned: Learned
    ttl: float
    message: str | None
    rate: float  # the rate it sets now, requests per second


def format_rate(per_second: float) -> str:
    """``2.5/s`` or ``49.0/min``: whichever reads naturally."""
    return f"{per_second:.1f}/s" if per_second >= 1 else f"{per_second * 60:.1f}/min"


class Learner:
    """Thread-safe cache of learned values per key set; decides updates. No I/O."""

    def __init__(
        self,
        config: AdaptiveConfig,
        *,
        ceiling: float,
        buckets: tuple[Bucket, ...],
        wall_clock: typing.Callable[[], float],
    ) -> None:
        self.config = config
        self.ceiling = ceiling  # the configured pacing of the tier's limit, requests per second
        self._buckets = buckets
        self._clock = wall_clock
        self._lock = threading.Lock()
        self._known: dict[tuple[str, ...], tuple[str | None, Learned | None]] = {}

    @property
    def enabled(self) -> bool:
        return self.config.mode != "off"

    def buckets(self, keys: tuple[str, ...]) -> tuple[Bucket, ...]:
        """The buckets to reserve with: the tier's limit paced at the learned rate, if any."""
        known = self._known.get(keys)
        if known is None or known[1] is None:
            return self._buckets
        rate = rate_at(known[1], self._clock(), self.config, self.ceiling)
        first = self._buckets[0]
        if rate == self.ceiling:
            return self._buckets
        return (Bucket(1 / rate, first.burst), *self._buckets[1:])

    def slowest(self) -> float:
        """The slowest rate paced at now over the key sets known (the ceiling when none is learned)."""
        now = self._clock()
        learned = [value for _, value in list(self._known.values()) if value is not None]
        return min((rate_at(value, now, self.config, self.ceiling) for value in learned), default=self.ceiling)

    def pause_end(self, keys: tuple[str, ...]) -> float | None:
        """When a server-told pause known for ``keys`` (from any process) ends, on the wall
        clock, while it lasts; None when there is none."""
        known = self._known.get(keys)
        until = None if known is None or known[1] is None else known[1].paused_until
        return until if until is not None and until > self._clock() else None

    def remember(self, keys: tuple[str, ...], text: str | None) -> None:
        """Take in what the backend holds for ``keys`` (from a reservation)."""
        known = self._known.get(keys)
        if known is not None and known[0] == text:
            return
        if known is None and text is None:
            return
        with self._lock:
            if len(self._known) >= _CACHE_LIMIT:
                self._known.clear()
            self._known[keys] = (text, Learned.decode(text))

    def consider(
        self,
        keys: tuple[str, ...],
        headers: typing.Iterable[tuple[str, str]],
        status: int,
        reset_format: ResetFormat,
        pause: float = 0.0,
    ) -> tuple[Change | None, int]:
        """What a response teaches: a change to store (or None), and how many fields were ignored.

        ``pause`` is the wait the server told with it, if any.
        """
        now = self._clock()
        observation = observe(headers, status=status, now=now, reset_format=reset_format)
        if not observation.policies and not observation.throttled:
            return None, observation.ignored
        with self._lock:
            known = self._known.get(keys)
            current = None if known is None else known[1]
            changed = update(current, observation, now, self.config, self.ceiling, pause=pause)
            learned = changed
            if changed is not None and current is not None and current.paused_until is not None:
                learned = dataclasses.replace(changed, paused_until=current.paused_until)  # still in force
            if pause > 0:
                # Recorded for the fleet: processes holding slots reserved before this 429
                # see it when they wake (Engine._wait_for_slot) and queue behind it.
                learned = self._with_pause(learned or current, now, now + pause) or learned
            if learned is None:
                return None, observation.ignored
            before = rate_at(current, now, self.config, self.ceiling)
            self._known[keys] = (learned.encode(), learned)
        after = rate_at(learned, now, self.config, self.ceiling)
        ttl = max(learned.expires, learned.paused_until or 0.0) - now
        message = None
        if changed is not None:
            message = f"learned rate {format_rate(before)} -> {format_rate(after)}: {learned.reason}"
        return Change(learned, max(ttl, 0.001), message, after), observation.ignored

    def _with_pause(self, learned: Learned | None, now: float, until: float) -> Learned | None:
        if learned is None:
            # Nothing learned: a record that only carries the pause, paced at the ceiling.
            return Learned(self.ceiling, now, until, "server-told pause", paused_until=until)
        if learned.paused_until is not None and learned.paused_until >= until:
            return None  # already known: another 429 of the same burst
        return dataclasses.replace(learned, paused_until=until)
