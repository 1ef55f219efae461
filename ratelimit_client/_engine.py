"""The path of one request: reserve a slot, sleep until it, send, classify, retry or give up.

Written once, as a generator that yields :mod:`._effects` for a driver to perform, so
the sync and async transports share every decision. No I/O happens here.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import threading
import time
import typing

import httpx
import tenacity

from . import _effects as fx
from ._adaptive import AdaptiveConfig
from ._backoff import RetryBudget
from ._body import DEFAULT_SPOOL_THRESHOLD, Replay, replay_for
from ._events import Event, Monitor, Status, describe
from ._exceptions import (
    BackendError,
    MaxWaitExceeded,
    NetworkFailure,
    RateLimited,
    RequestFailed,
    ServerError,
    ServerWaitTooLong,
)
from ._headers import ResetFormat, server_wait
from ._identity import api_key_from_authorization
from ._learner import Change, Learner
from ._retry import Outcome, RetryPolicy, Tally, make_retrying

if typing.TYPE_CHECKING:
    from ._backends import Reservation
    from ._limiter import Limiter

__all__ = ["EXTENSION", "Engine", "RequestStats"]

EXTENSION = "ratelimit_client"
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_RETRY_STATUSES = frozenset({500, 502, 503, 504})
# Failures that happen before a byte of the request left: safe to retry for any method.
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)
# Failures of our own making: retrying cannot help.
_FATAL = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)

T = typing.TypeVar("T")
Steps = typing.Generator[fx.Effect, typing.Any, T]


@dataclasses.dataclass(frozen=True, slots=True)
class RequestStats:
    """Per-request results, in ``response.extensions["ratelimit_client"]``."""

    attempts: int
    slot_wait: float  # seconds spent waiting for rate-limit slots
    retry_wait: float  # seconds spent backing off between attempts


# Read on every request: an Enum member's attribute look-up costs ~80 ns in CPython 3.11.
_OK = Status.OK
# Most requests go at once, first try: frozen, so one instance serves them all (building
# a frozen dataclass costs ~0.5 µs, a thirtieth of the whole layer).
_AT_ONCE = RequestStats(1, 0.0, 0.0)


@dataclasses.dataclass(slots=True)
class _Progress(Tally):
    """A request's retry history (the :class:`Tally` the retry policy reads) and what
    :class:`RequestStats` reports: one object per request."""

    attempts: int = 0
    slot_wait: float = 0.0
    retry_wait: float = 0.0


class Engine:
    """Everything a transport decides, for both transports. Thread-safe; holds no I/O."""

    def __init__(
        self,
        limiter: Limiter,
        policy: RetryPolicy,
        monitor: Monitor,
        *,
        api_key: str | None = None,
        ip: str | None = None,
        max_wait: float | None = None,
        spool_threshold: int = DEFAULT_SPOOL_THRESHOLD,
        clock: typing.Callable[[], float] = time.monotonic,
        wall_clock: typing.Callable[[], float] = time.time,
        random_source: typing.Callable[[], float] | None = None,
        adaptive: AdaptiveConfig | None = None,
        ceiling: float | None = None,
        reset_formats: typing.Mapping[str, ResetFormat] | None = None,
    ) -> None:
        self.limiter = limiter
        self.policy = policy
        self.monitor = monitor
        self._api_key = api_key
        self._ip = ip
        self._max_wait = max_wait
        self._spool_threshold = spool_threshold
        self._clock = clock
        self._wall_clock = wall_clock
        self._retrying = (
            make_retrying(policy) if random_source is None else make_retrying(policy, random_source=random_source)
        )
        self._budget = RetryBudget(ratio=policy.retry_budget_ratio)
        self._budget_lock = threading.Lock()
        self._local_ips: dict[tuple[str, int], str] = {}
        # (Authorization header, host, port, scheme) -> storage keys: see _known_keys.
        self._identities: dict[tuple[bytes | None, str, int | None, str], tuple[str, ...]] = {}
        self._deposited = 0  # requests already paid into the retry budget
        self._reset_formats = dict(reset_formats or {})
        buckets = limiter.buckets
        self.learner = Learner(
            adaptive if adaptive is not None else AdaptiveConfig(mode="off"),
            ceiling=ceiling if ceiling is not None else 1 / buckets[0].interval,
            buckets=buckets,
            wall_clock=wall_clock,
        )
        monitor.configured_rate = self.learner.ceiling
        self._learning = self.learner.enabled  # read on every request: the config never changes
        # Per key set, how many server-told pauses this engine has applied (see _wait_for_slot).
        self._pauses: dict[tuple[str, ...], int] = {}

    def send(self, request: httpx.Request) -> Steps[httpx.Response]:
        """Deliver ``request`` within the limits and the retry policy."""
        self.monitor.count("requests")
        replay = replay_for(request)
        if replay is None:
            spool = yield fx.SpoolBody(request.stream, self._spool_threshold)
            replay = Replay(request, spool=spool)
        try:
            keys = self._known_keys(request)
            if keys is None:
                keys = yield from self._keys(request)
            progress = _Progress(self._clock)
            outcome = yield from self._attempt(request, replay, keys, progress)
            if outcome.retry:
                outcome = yield from self._retry(request, replay, keys, progress, outcome)
            return self._finish(request, outcome, progress)
        finally:
            replay.close()

    def _known_keys(self, request: httpx.Request) -> tuple[str, ...] | None:
        """The request's storage keys, or None while the local IP towards its host is unknown."""
        # Cached by what they are derived from, as it comes: one look-up per request
        # instead of parsing the Authorization header and hashing its key each time. The
        # header's bytes as they are: a client's default header is the same bytes object
        # on every request, which keeps its hash.
        url = request.url
        auth = None if self._api_key else _raw_header(request.headers, b"authorization")
        identity = (auth, url.host, url.port, url.scheme)
        keys = self._identities.get(identity)
        if keys is None:
            ip = self._ip or self._local_ips.get(_where(url))
            if ip is None:
                return None
            if len(self._identities) >= 4096:
                self._identities.clear()
            keys = self._identities[identity] = self.limiter.keys_for(ip, self._api_key_of(request))
        return keys

    def _keys(self, request: httpx.Request) -> Steps[tuple[str, ...]]:
        """The request's storage keys, after finding the local IP towards its host."""
        where = _where(request.url)
        ip = yield fx.LocalIP(*where)
        if ip is None:
            return self.limiter.keys_for("unknown", self._api_key_of(request))  # the next request asks again
        self._local_ips[where] = ip
        return typing.cast("tuple[str, ...]", self._known_keys(request))

    def _api_key_of(self, request: httpx.Request) -> str | None:
        if self._api_key:
            return self._api_key
        auth = _raw_header(request.headers, b"authorization")
        return api_key_from_authorization(None if auth is None else auth.decode("latin-1"))

    def _retry(
        self, request: httpx.Request, replay: Replay, keys: tuple[str, ...], progress: _Progress, outcome: Outcome
    ) -> Steps[Outcome]:
        """Retry, as the policy says, a request whose first attempt came to ``outcome``; the last outcome."""
        # Only now: a first attempt that needs no retry is most requests, and setting up
        # tenacity costs more than the rest of the request path together. tenacity keeps
        # statistics per thread; begin() resets them. We do not read them.
        self._retrying.begin()
        state = tenacity.RetryCallState(self._retrying, fn=None, args=(), kwargs={})
        first = self._retrying.iter(state)
        assert isinstance(first, tenacity.DoAttempt)  # a fresh state always attempts first
        state.set_result(outcome)  # the attempt already made
        while True:
            action = self._retrying.iter(state)
            if isinstance(action, tenacity.DoAttempt):
                try:
                    state.set_result((yield from self._attempt(request, replay, keys, progress)))
                except MaxWaitExceeded as exc:
                    raise self._gave_up_waiting(request, exc, outcome, progress) from _cause(outcome)
            elif isinstance(action, tenacity.DoSleep):
                outcome = _last(state)
                # Charged here, once the policy has decided to retry: a failure it stops
                # on anyway takes nothing from the budget the fleet shares.
                if outcome.budgeted and not self._budget_allows():
                    return dataclasses.replace(outcome, retry=False, reason=f"{outcome.reason}; retry budget exhausted")
                self._announce_retry(request, outcome, float(action), progress)
                state.prepare_for_next_attempt()
                progress.retry_wait += float(action)
                yield fx.Sleep(float(action))
            else:
                return typing.cast("Outcome", action)

    def _attempt(
        self, request: httpx.Request, replay: Replay, keys: tuple[str, ...], progress: _Progress
    ) -> Steps[Outcome]:
        pauses = self._pauses.get(keys, 0)
        reservation: Reservation = yield self._reserve(keys)
        if self._slot_wait(keys, reservation) > 0:
            yield from self._wait_for_slot(keys, progress, reservation, pauses)
        progress.attempts += 1
        self.monitor.count("attempts")
        if progress.attempts > 1:
            self.monitor.count("retries")
        try:
            response: httpx.Response = yield fx.Send(replay.request())
        except _FATAL:
            raise
        except httpx.TransportError as exc:
            return self._classify_error(request, exc, progress)
        status = response.status_code
        if status < 500 and status != 429 and not (self._learning and _has_rate_fields(response)):
            # Most responses: final, and nothing in them to learn.
            return Outcome("ok", progress, response)
        return (yield from self._classify_response(request, response, keys, progress))

    def _reserve(self, keys: tuple[str, ...]) -> fx.Reserve:
        buckets = self.learner.buckets(keys) if self._learning else self.limiter.buckets
        return fx.Reserve(keys, buckets, self._max_wait)

    def _slot_wait(self, keys: tuple[str, ...], reservation: Reservation) -> float:
        """Seconds until the reserved slot; takes in the learned record it came with."""
        if self._learning:
            self.learner.remember(keys, reservation.learned)
        if not reservation.granted:
            raise MaxWaitExceeded(reservation.wait, typing.cast("float", self._max_wait))
        return reservation.wait

    def _wait_for_slot(
        self, keys: tuple[str, ...], progress: _Progress, reservation: Reservation, pauses: int
    ) -> Steps[None]:
        """Sleep until ``reservation``'s slot; queue again if a pause was told meanwhile.

        ``pauses`` is how many pauses this engine had applied to ``keys`` when it was taken.
        """
        queued_behind: float | None = None  # the end of the fleet's pause we queued behind
        while True:
            self.monitor.waited(reservation.wait)
            self.monitor.count("waiting")
            try:
                yield fx.Sleep(reservation.wait)
            except GeneratorExit:
                # Closed, not cancelled (a request coroutine destroyed while it waited):
                # nothing more may be yielded, so the slot stays taken.
                raise
            except BaseException:
                # Cancelled (or interrupted) before the slot came: give it back, unburnt.
                yield fx.Cancel(reservation)
                raise
            finally:
                self.monitor.count("waiting", -1)
            progress.slot_wait += reservation.wait
            if self._pauses.get(keys, 0) == pauses:
                if not self._learning:
                    return
                # Another process's 429 is invisible to the count above: one cheap read
                # of the fleet's learned record shows whether a pause it told still lasts.
                self.learner.remember(keys, (yield fx.Peek(keys[0])))
                end = self.learner.pause_end(keys)
                # Once behind a pause is enough: that process stored the pause in the
                # bucket before announcing it, so the new slot is after it. Checking again
                # would only measure the other host's wall clock against ours, and a skew
                # would keep this request queueing (and taking slots) for its length.
                if end is None or end == queued_behind:
                    return
                queued_behind = end
            # A 429 paused these keys while we slept: our slot was handed out before the
            # pause, so going now would only draw another 429. Queue again, behind it.
            pauses = self._pauses.get(keys, 0)
            reservation = yield self._reserve(keys)
            if self._slot_wait(keys, reservation) <= 0:
                return

    def _may_replay(self, request: httpx.Request) -> bool:
        return request.method in _IDEMPOTENT or "idempotency-key" in request.headers or self.policy.retry_unsafe

    def _budget_allows(self) -> bool:
        # Each request pays into the budget; paid here, all at once, rather than under a
        # lock on every request (deposits only add, up to a cap: the sum is the same).
        requests = self.monitor.count("requests", 0)
        with self._budget_lock:
            self._budget.deposit(requests - self._deposited)
            self._deposited = requests
            return self._budget.withdraw(self._clock())

    def _classify_error(self, request: httpx.Request, exc: httpx.TransportError, tally: Tally) -> Outcome:
        reason = type(exc).__name__
        tally.record("network_error")
        if isinstance(exc, _UNSENT):
            return Outcome("network_error", tally, exc, retry=True, reason=reason)
        if not self._may_replay(request):
            return Outcome("final", tally, exc, reason=f"{reason}; {request.method} is not retried")
        return Outcome("network_error", tally, exc, retry=True, reason=reason, budgeted=True)

    def _classify_response(
        self, request: httpx.Request, response: httpx.Response, keys: tuple[str, ...], tally: Tally
    ) -> Steps[Outcome]:
        status = response.status_code
        reset_format = self._reset_formats.get(request.url.host, self.policy.reset_format)
        final = status != 429 and (status not in _RETRY_STATUSES or not self._may_replay(request))
        wait = None
        if not final:
            hint = server_wait(response.headers.multi_items(), now=self._wall_clock(), reset_format=reset_format)
            wait = None if hint is None else hint.wait
        told = wait if status == 429 and wait is not None and 0 < wait <= self.policy.max_server_wait else 0.0
        # What the response teaches changes the pacing of the pause below: learn it first.
        change = self._consider(response, keys, reset_format, told) if self._learning else None
        try:
            yield from self._share(request, keys, told, change)
        except BackendError as exc:
            # The answer is here: a backend that cannot store what it taught must not turn
            # it into an error (the caller would send the request again). Said, not raised.
            self.monitor.emit(
                Event(
                    "backend_degraded",
                    f"rate-limit backend failed after {describe(request)} was answered; "
                    f"what the answer said was not shared with other processes: {exc}",
                    describe(request),
                    reason=type(exc).__name__,
                ),
                logging.WARNING,
            )
        except GeneratorExit:
            raise  # closed mid-step: nothing more may be yielded
        except BaseException:
            # Cancelled or interrupted with the response open: close it, or its connection
            # stays taken from the pool.
            yield fx.Close(response)
            raise
        if final:
            return Outcome("ok", tally, response)
        yield fx.Close(response)
        if status == 429:
            tally.record("throttled")
            return Outcome("throttled", tally, response, wait, retry=True, reason="429")
        tally.record("server_error")
        reason = f"{status} {response.reason_phrase}".strip()
        return Outcome("server_error", tally, response, wait, retry=True, reason=reason, budgeted=True)

    def _share(self, request: httpx.Request, keys: tuple[str, ...], told: float, change: Change | None) -> Steps[None]:
        """Store a server-told pause and what the response taught, for every process."""
        if told:
            # Every caller of these keys waits, in every process sharing the backend. Stored
            # before the learned record announces it to processes already waiting (see
            # _wait_for_slot), so that those who queue again land behind it.
            yield fx.Pause(keys, self.learner.buckets(keys), told)
            with self._budget_lock:
                self._pauses[keys] = self._pauses.get(keys, 0) + 1
        if change is not None:
            yield fx.Learn(keys[0], change.learned.encode(), change.ttl)
            if change.message is not None:
                self.monitor.rate_changed(
                    Event("rate_changed", change.message, describe(request), reason=change.learned.reason),
                    change.rate,
                )

    def _consider(
        self, response: httpx.Response, keys: tuple[str, ...], reset_format: ResetFormat, told: float
    ) -> Change | None:
        """What the response teaches about the server's limit (``told``: the pause it set)."""
        # Every response, not only 429s, says what the server allows: the whole fleet
        # sharing the key learns it through the backend.
        if response.status_code != 429 and not _has_rate_fields(response):
            return None
        change, ignored = self.learner.consider(
            keys, response.headers.multi_items(), response.status_code, reset_format, told
        )
        if ignored:
            self.monitor.count("ignored_headers", ignored)
        return change

    def _announce_retry(self, request: httpx.Request, outcome: Outcome, wait: float, progress: _Progress) -> None:
        what = describe(request)
        if outcome.kind == "throttled":
            source = "server" if outcome.server_wait is not None else "backoff"
            message = (
                f"throttled (429) on {what}, retrying in {wait:.1f} s ({source}; "
                f"attempt {outcome.tally.throttled}/{self.policy.throttle_attempts})"
            )
            self.monitor.throttled(Event("throttled", message, what, progress.attempts, wait, "429"))
            return
        label = "server error" if outcome.kind == "server_error" else "network failure"
        message = (
            f"{label} ({outcome.reason}) on {what}, retrying in {wait:.1f} s "
            f"(attempt {outcome.tally.failures}/{self.policy.failure_attempts})"
        )
        self.monitor.failed(Event("retrying", message, what, progress.attempts, wait, outcome.reason))

    def _finish(self, request: httpx.Request, outcome: Outcome, progress: _Progress) -> httpx.Response:
        stats = (
            _AT_ONCE
            if progress.attempts == 1 and not progress.slot_wait and not progress.retry_wait
            else RequestStats(progress.attempts, progress.slot_wait, progress.retry_wait)
        )
        if outcome.kind == "ok":
            response = outcome.value
            assert isinstance(response, httpx.Response)  # an "ok" outcome holds the response
            response.extensions[EXTENSION] = stats
            # When already OK, succeeded() would change nothing: skip describing the request.
            if response.status_code < 500 and self.monitor.status is not _OK:
                self.monitor.succeeded(describe(request))
            return response
        error = self._error(request, outcome, progress.attempts)
        self._report_give_up(request, error, progress.attempts, outcome.reason)
        raise error from _cause(outcome)

    def _gave_up_waiting(
        self, request: httpx.Request, exc: MaxWaitExceeded, last: Outcome, progress: _Progress
    ) -> MaxWaitExceeded:
        """A retry whose slot is beyond ``max_wait``: the error, with what came before it."""
        response = last.value if isinstance(last.value, httpx.Response) else None
        error = MaxWaitExceeded(
            exc.wait, exc.max_wait, attempts=progress.attempts, response=response, after=last.reason or last.kind
        )
        self._report_give_up(request, error, progress.attempts, "max_wait")
        return error

    def _report_give_up(self, request: httpx.Request, error: Exception, attempts: int, reason: str) -> None:
        self.monitor.count("gave_up")
        self.monitor.emit(Event("gave_up", str(error), describe(request), attempts, reason=reason), logging.WARNING)

    def _error(self, request: httpx.Request, outcome: Outcome, attempts: int) -> RequestFailed:
        what = describe(request)
        response = outcome.value if isinstance(outcome.value, httpx.Response) else None
        tally = outcome.tally
        if tally.too_long is not None:
            return ServerWaitTooLong(
                f"{what}: the server asked to wait {tally.too_long:.1f} s, more than the retry "
                f"policy allows (max_server_wait={self.policy.max_server_wait:g} s or the time "
                f"left in the budget); gave up after {attempts} attempt(s)",
                attempts=attempts,
                wait=tally.too_long,
                response=response,
            )
        if outcome.kind == "final":
            return NetworkFailure(
                f"{what}: {outcome.reason} after the request was sent: it may or may not have "
                f"been processed (send an Idempotency-Key header or set retry_unsafe=True to retry)",
                attempts=attempts,
            )
        if outcome.kind == "throttled":
            return RateLimited(
                f"{what}: still throttled (429) after {attempts} attempt(s)", attempts=attempts, response=response
            )
        if outcome.kind == "server_error":
            return ServerError(
                f"{what}: {outcome.reason} after {attempts} attempt(s)", attempts=attempts, response=response
            )
        return NetworkFailure(f"{what}: {outcome.reason} after {attempts} attempt(s)", attempts=attempts)


def _has_rate_fields(response: httpx.Response) -> bool:
    """Whether any header name holds "ratelimit" (RateLimit*, X-RateLimit-*)."""
    # Most responses have none: look at the lower-case names, before httpx decodes every
    # header, in one pass in C over all of them (a loop per name costs twice as much, and
    # this runs on every response). Names hold no newline, so no match spans two of them.
    # find(), not ``in``: bytes.__contains__ first tries its argument as an integer and
    # raises and clears a TypeError every time, three times the cost.
    return b"\n".join(map(_LOWER_NAME, _triples(response.headers))).find(b"ratelimit") >= 0


_LOWER_NAME = operator.itemgetter(1)  # of a header triple; map() with it runs no Python frame


def _raw_header(headers: httpx.Headers, name: bytes) -> bytes | None:
    """One header's raw value by its lower-case name, without httpx decoding them all."""
    for _, lower, value in _triples(headers):
        if lower == name:
            return value
    return None


def _keeps_triples() -> bool:
    """Whether httpx keeps each header as (name, lower-case name, value) in ``Headers._list``."""
    headers = httpx.Headers([(b"X-Ab", b"1")])
    return getattr(headers, "_list", None) == [(b"X-Ab", b"x-ab", b"1")]


# Both scans above run on every request, and httpx's public ``Headers.raw`` builds a
# new list of pairs on every read (half of their cost): read the triples httpx keeps
# when it keeps them as it does today (checked once, at import; tests/test_transport.py
# fails if it stops), else build them from ``raw``.
_HTTPX_TRIPLES = _keeps_triples()


def _triples(headers: httpx.Headers) -> list[tuple[bytes, bytes, bytes]]:
    if _HTTPX_TRIPLES:
        return headers._list
    return [(name, name.lower(), value) for name, value in headers.raw]


def _where(url: httpx.URL) -> tuple[str, int]:
    """The host and port a request goes to: what the local IP depends on."""
    return url.host, url.port or (443 if url.scheme == "https" else 80)


def _cause(outcome: Outcome) -> BaseException | None:
    return outcome.value if isinstance(outcome.value, BaseException) else None


def _last(state: tenacity.RetryCallState) -> Outcome:
    assert state.outcome is not None
    return typing.cast("Outcome", state.outcome.result())
