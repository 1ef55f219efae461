"""Status, statistics and events: what a transport tells the user. Nothing here holds a secret."""

from __future__ import annotations

import dataclasses
import enum
import logging
import re
import threading
import typing

import httpx

__all__ = [
    "Event",
    "EventKind",
    "Monitor",
    "RedactingFilter",
    "Status",
    "TransportStatistics",
    "install_log_filter",
    "redact_text",
    "redact_url",
]

logger = logging.getLogger("ratelimit_client")
# A library leaves output to the application: without this, Python's last-resort handler
# would print our warnings to stderr when logging is not configured.
logger.addHandler(logging.NullHandler())

EventKind = typing.Literal[
    "throttled", "retrying", "network_failure", "recovered", "gave_up", "backend_degraded",
    "backend_restored", "rate_changed",
]  # fmt: skip


class Status(enum.Enum):
    """How the transport's requests are faring, as a user-facing status line would say."""

    OK = "ok"
    THROTTLED = "throttled"
    NETWORK_FAILURE = "network failure"


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """Something worth telling the user. ``request`` is the method and redacted URL."""

    kind: EventKind
    message: str
    request: str = ""
    attempt: int | None = None
    wait: float | None = None
    reason: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class TransportStatistics:
    """A snapshot of a transport's counters (since it was created) and its status."""

    status: Status
    requests: int
    attempts: int
    retries: int
    throttled: int
    slot_waits: int
    slot_wait_seconds: float
    waiting: int
    network_failures: int
    gave_up: int
    ignored_headers: int = 0  # malformed or absurd rate-limit header fields skipped
    configured_rate: float = 0.0  # the tier's pacing, requests per second
    learned_rate: float | None = None  # the fleet's learned rate when it last changed, if any


_MASK = "***"

# Matches any text, malformed URLs too: the authority runs to the first "/", "?" or "#" as
# urllib.parse has it, and its user info to the last "@", lest an unencoded "@" in a password
# leave the rest of the password before the host.
_URL_PARTS = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*:(?://)?)?(?P<authority>[^/?#]*)(?P<path>[^?#]*)"
    r"(?:\?(?P<query>[^#]*))?(?:#(?P<fragment>.*))?",
    re.DOTALL,
)
# A query item: the text between separators ("&", and ";" which some servers split on too).
_QUERY_ITEM = re.compile(r"[^&;]+")


def redact_url(url: httpx.URL | str, *, keep: typing.Container[str] = ()) -> str:
    """``url`` without user info, with every query value (but those named in ``keep``) and the
    fragment masked: tokens hide there. An item without a name (``?token``) is masked whole."""
    parts = _URL_PARTS.fullmatch(str(url))
    assert parts is not None  # every group is optional or matches the empty string
    scheme, authority, path, query, fragment = parts.group("scheme", "authority", "path", "query", "fragment")
    shown = f"{scheme or ''}{authority.rpartition('@')[2]}{path}"
    if query is not None:
        shown += "?" + _QUERY_ITEM.sub(lambda item: _masked_item(item.group(), keep), query)
    if fragment is not None:
        shown += f"#{_MASK}" if fragment else "#"
    return shown


def _masked_item(item: str, keep: typing.Container[str]) -> str:
    name, equals, _ = item.partition("=")
    if not (name and equals):
        return _MASK
    return item if name in keep else f"{name}={_MASK}"


def describe(request: httpx.Request) -> str:
    return f"{request.method} {redact_url(request.url)}"


# In free text: a URL runs to whitespace, a quote or an angle bracket. A query may also come
# without scheme and host ("GET /files?token"), and a name=value pair on its own.
_URL = re.compile(r"""[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>]*""")
_QUERY = re.compile(r"""(?<![\s"'<>])\?[^#\s"'<>]+""")
_PAIR = re.compile(r"""(&[^=&;#\s"'<>]+=)[^&;#\s"'<>]*""")


def redact_text(text: str) -> str:
    """``text`` with every URL shown as :func:`redact_url` shows it, and every other query
    string's items and ``&name=value`` pair masked."""
    text = _URL.sub(lambda url: redact_url(url.group()), text)
    text = _QUERY.sub(lambda query: redact_url(query.group()), text)
    return _PAIR.sub(rf"\1{_MASK}", text)


class RedactingFilter(logging.Filter):
    """Masks query-string values and user info of URLs in log records.

    httpx masks the ``Authorization`` header but logs each request's full URL at INFO
    (``HTTP Request: GET https://…?api_key=…``); the transports install this filter on
    the ``httpx`` logger so that credentials in query strings never reach a log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {name: _redact_arg(arg) for name, arg in record.args.items()}
        return True


def _redact_arg(arg: object) -> object:
    if isinstance(arg, httpx.URL):
        return redact_url(arg)
    if isinstance(arg, str):
        return redact_text(arg)
    return arg


_install_lock = threading.Lock()


def install_log_filter(name: str = "httpx") -> None:
    """Add a :class:`RedactingFilter` to logger ``name`` unless it already has one."""
    target = logging.getLogger(name)
    with _install_lock:
        if not any(isinstance(f, RedactingFilter) for f in target.filters):
            target.addFilter(RedactingFilter())


class Monitor:
    """Counts, status transitions and event delivery for one transport; thread-safe."""

    def __init__(
        self,
        on_event: typing.Callable[[Event], None] | None,
        clock: typing.Callable[[], float],
    ) -> None:
        self._on_event = on_event
        self._clock = clock
        self._lock = threading.Lock()
        self._status = Status.OK
        self._failing_since: float | None = None
        self._counts = dict.fromkeys(
            ("requests", "attempts", "retries", "throttled", "slot_waits", "waiting",
             "network_failures", "gave_up", "ignored_headers"),
            0,
        )  # fmt: skip
        self._slot_wait_seconds = 0.0
        self.configured_rate = 0.0
        self._learned_rate: float | None = None

    @property
    def status(self) -> Status:
        return self._status

    def statistics(self) -> TransportStatistics:
        with self._lock:
            return TransportStatistics(
                status=self._status,
                slot_wait_seconds=self._slot_wait_seconds,
                configured_rate=self.configured_rate,
                learned_rate=self._learned_rate,
                **self._counts,
            )

    def rate_changed(self, event: Event, rate: float) -> None:
        with self._lock:
            self._learned_rate = rate
        self.emit(event, logging.INFO)

    def count(self, name: str, delta: int = 1) -> int:
        """Add ``delta`` to a counter; its new value."""
        # Twice per request: acquire and release rather than ``with``, which costs two
        # bound methods and an __exit__ call more (40 % of this method in CPython 3.11).
        lock = self._lock
        lock.acquire()
        try:
            value = self._counts[name] = self._counts[name] + delta
        finally:
            lock.release()
        return value

    def waited(self, seconds: float) -> None:
        with self._lock:
            self._counts["slot_waits"] += 1
            self._slot_wait_seconds += seconds

    def succeeded(self, request: str) -> None:
        with self._lock:
            previous, self._status = self._status, Status.OK
            since, self._failing_since = self._failing_since, None
        if previous is Status.NETWORK_FAILURE and since is not None:
            elapsed = self._clock() - since
            self.emit(
                Event("recovered", f"connection restored after {elapsed:.1f} s", request),
                logging.INFO,
            )

    def throttled(self, event: Event) -> None:
        with self._lock:
            self._counts["throttled"] += 1
            if self._status is not Status.NETWORK_FAILURE:
                self._status = Status.THROTTLED
        self.emit(event, logging.INFO)

    def failed(self, event: Event) -> None:
        """A network or server failure; the first of an episode also emits ``network_failure``."""
        with self._lock:
            first = self._status is not Status.NETWORK_FAILURE
            self._status = Status.NETWORK_FAILURE
            if first:
                self._failing_since = self._clock()
                self._counts["network_failures"] += 1
        if first:
            self.emit(dataclasses.replace(event, kind="network_failure"), logging.WARNING)
        else:
            self.emit(event, logging.INFO)

    def emit(self, event: Event, level: int = logging.INFO) -> None:
        logger.log(level, "%s", event.message)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                # A broken hook must not break the upload it reports on.
                logger.exception("on_event hook raised")
