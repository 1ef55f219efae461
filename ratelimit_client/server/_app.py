"""The emulated rate-limited upload API: ``POST /upload``, ``GET /ping``, ``GET /stats``.

Layers, outermost first: control and stats endpoints (never limited, never faulted) →
fault injection (outages, latency, 503s, dropped connections) → :class:`RateLimitMiddleware`
→ the upload handler.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import random
import threading
import time
import typing
import urllib.parse

import anyio

from .._exceptions import ConfigError
from .._rate import DEFAULT_TIERS, Rate
from ._counting import Mode
from ._middleware import (
    HeaderStyle,
    Message,
    RateLimitMiddleware,
    Receive,
    RequestDecision,
    RetryAfterStyle,
    Send,
    ServerScope,
    _send_json,
    client_ip,
)

__all__ = ["Faults", "Outages", "ServerConfig", "Stats", "UploadAPI", "create_app"]

STATS_PATH = "/stats"
CONTROL_PATH = "/_control/outage"


@dataclasses.dataclass(frozen=True, slots=True)
class Faults:
    """Faults to inject: ``latency`` seconds added to every answer, a share ``error_rate``
    answered 503, a share ``drop_rate`` whose connection is dropped without a response, and
    ``outages`` as ``(at, seconds)`` since start during which no connection is accepted."""

    latency: float = 0.0
    error_rate: float = 0.0
    drop_rate: float = 0.0
    outages: tuple[tuple[float, float], ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.latency < 3600:
            raise ConfigError("latency", self.latency, "seconds from 0 to 3600")
        for name in ("error_rate", "drop_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(name, getattr(self, name), "a share from 0 to 1")
        for at, seconds in self.outages:
            if at < 0 or seconds <= 0:
                raise ConfigError("outage", f"{at}:{seconds}", "AT:SECONDS with AT >= 0 and SECONDS > 0")


@dataclasses.dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything the emulated API does; see :class:`RateLimitMiddleware` for the limit options."""

    tiers: typing.Mapping[str, Rate | str] = dataclasses.field(default_factory=lambda: dict(DEFAULT_TIERS))
    keys: typing.Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)  # raw keys: never shown
    default_tier: str = "free"
    scopes: tuple[ServerScope, ...] = ("ip+key",)
    mode: Mode = "gcra"
    count_rejected: bool = False
    schedule: tuple[tuple[float, Rate | str], ...] = ()
    headers: HeaderStyle = "none"
    retry_after: RetryAfterStyle = "seconds"
    trusted_proxies: tuple[str, ...] = ()
    max_keys: int = 100_000
    max_body: int = 64 * 1024 * 1024
    faults: Faults = dataclasses.field(default_factory=Faults)
    control: bool = False  # allow POST /_control/outage from loopback (simulations)


class Outages:
    """Outage windows on the server's monotonic clock; the runner closes the listener during them."""

    def __init__(self, clock: typing.Callable[[], float], windows: typing.Iterable[tuple[float, float]] = ()) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        start = clock()
        self.windows: list[tuple[float, float]] = sorted((start + at, start + at + s) for at, s in windows)

    def schedule(self, after: float, seconds: float) -> None:
        now = self._clock()
        with self._lock:
            self.windows = sorted([*self.windows, (now + after, now + after + seconds)])

    def active(self, now: float | None = None) -> tuple[float, float] | None:
        """The window in force at ``now``, if any."""
        now = self._clock() if now is None else now
        with self._lock:
            return next(((a, b) for a, b in self.windows if a <= now < b), None)


class Stats:
    """Counts per hashed key and per client IP since start, bounded, plus a timeline."""

    def __init__(self, clock: typing.Callable[[], float], *, max_entries: int = 10_000, max_events: int = 200_000):
        self._clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self._max = max_entries
        self.totals = {"admitted": 0, "throttled": 0, "failed": 0}
        self.by_key: collections.OrderedDict[str, dict[str, int]] = collections.OrderedDict()
        self.by_ip: collections.OrderedDict[str, dict[str, int]] = collections.OrderedDict()
        # (seconds since start, outcome, ip, key id) of each decision, newest kept.
        self.events: collections.deque[tuple[float, str, str, str]] = collections.deque(maxlen=max_events)

    def add(self, outcome: str, ip: str, key: str, at: float | None = None) -> None:
        at = self._clock() if at is None else at
        with self._lock:
            self.totals[outcome] += 1
            for table, name in ((self.by_key, key[:16]), (self.by_ip, ip)):
                row = table.get(name)
                if row is None:
                    if len(table) >= self._max:
                        table.popitem(last=False)
                    row = table[name] = {"admitted": 0, "throttled": 0, "failed": 0}
                table.move_to_end(name)
                row[outcome] += 1
            self.events.append((round(at - self.started, 6), outcome, ip, key[:16]))

    def on_decision(self, decision: RequestDecision) -> None:
        self.add("admitted" if decision.allowed else "throttled", decision.ip, decision.key, decision.at)

    def snapshot(self, *, events: bool = False) -> dict[str, object]:
        with self._lock:
            out: dict[str, object] = {
                "uptime": round(self._clock() - self.started, 6),
                "totals": dict(self.totals),
                "by_key": {k: dict(v) for k, v in self.by_key.items()},
                "by_ip": {k: dict(v) for k, v in self.by_ip.items()},
            }
            if events:
                out["events"] = [list(e) for e in self.events]
        return out


class UploadAPI:
    """The endpoints behind the limiter: ``POST /upload`` answers the byte count and SHA-256."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body

    async def __call__(self, scope: typing.MutableMapping[str, typing.Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/ping" and method in ("GET", "HEAD"):
            await _send_json(send, 200, {"ok": True})
        elif path == "/upload" and method in ("POST", "PUT"):
            await self._upload(scope, receive, send)
        elif path in ("/ping", "/upload"):
            await _send_json(send, 405, {"error": "method not allowed"})
        else:
            await _send_json(send, 404, {"error": "not found"})

    async def _upload(self, scope: typing.MutableMapping[str, typing.Any], receive: Receive, send: Send) -> None:
        declared = next((v for k, v in scope.get("headers", ()) if k.lower() == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await _send_json(send, 413, {"error": "body too large", "max_body": self.max_body})
            return
        digest = hashlib.sha256()
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _send_json(send, 413, {"error": "body too large", "max_body": self.max_body})
                return
            digest.update(chunk)
            more = message.get("more_body", False)
        await _send_json(send, 200, {"bytes": size, "sha256": digest.hexdigest()})


def _abort_connection(send: Send) -> bool:
    """Drop the connection under this request without answering. uvicorn's ``send`` is a
    method of its request cycle, which holds the asyncio transport: aborting it resets the
    connection as a crashed server or a broken middlebox would. False elsewhere."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    abort = getattr(transport, "abort", None)
    if abort is None:
        return False
    abort()
    return True


class _Faulty:
    """Outages, latency, 503s and dropped connections in front of ``app``."""

    def __init__(self, app: RateLimitMiddleware, faults: Faults, outages: Outages, stats: Stats) -> None:
        self.app = app
        self.faults = faults
        self.outages = outages
        self.stats = stats
        self._random = random.Random(faults.seed)  # noqa: S311 - fault injection, not security

    async def __call__(self, scope: typing.MutableMapping[str, typing.Any], receive: Receive, send: Send) -> None:
        if self.outages.active() is not None and _abort_connection(send):
            # A request on a connection opened before the outage began. The answer goes
            # nowhere; it only keeps uvicorn from logging a handler that never answered.
            await _send_json(send, 503, {"error": "outage"})
            return
        if self.faults.latency:
            await anyio.sleep(self.faults.latency)
        draw = self._random.random()
        if draw < self.faults.drop_rate + self.faults.error_rate:
            ip, key = self.app.identify(scope)
            self.stats.add("failed", ip, key)
            if draw < self.faults.drop_rate:
                _abort_connection(send)  # where it cannot, the 503 below is what the client sees
            await _send_json(send, 503, {"error": "service unavailable"})
            return
        await self.app(scope, receive, send)


class _Root:
    def __init__(self, inner: _Faulty, stats: Stats, outages: Outages, config: ServerConfig) -> None:
        self.inner = inner
        self.stats = stats
        self.outages = outages
        self.config = config
        self.middleware = inner.app

    async def __call__(self, scope: typing.MutableMapping[str, typing.Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == STATS_PATH and scope["method"] == "GET":
            query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
            body = self.stats.snapshot(events=query.get("events", ["0"])[0] == "1")
            body["tracked_identities"] = self.middleware.tracked
            body["mode"] = self.config.mode
            await _send_json(send, 200, body)
        elif path == CONTROL_PATH and scope["method"] == "POST" and self.config.control:
            await self._control(scope, receive, send)
        else:
            await self.inner(scope, receive, send)

    async def _control(self, scope: typing.MutableMapping[str, typing.Any], receive: Receive, send: Send) -> None:
        # Only a local operator may cut the server: the peer itself, no forwarded address.
        if not client_ip(scope, ()).startswith("127."):
            await _send_json(send, 403, {"error": "control is loopback only"})
            return
        raw = b""
        more = True
        while more:
            message: Message = await receive()
            raw += message.get("body", b"")
            more = message.get("more_body", False) and len(raw) < 4096
        try:
            request = json.loads(raw or b"{}")
            after, seconds = float(request.get("after", 0)), float(request["seconds"])
        except (ValueError, KeyError, TypeError, AttributeError):
            await _send_json(send, 400, {"error": 'expected {"after": s, "seconds": s}'})
            return
        self.outages.schedule(after, seconds)
        await _send_json(send, 200, {"scheduled": [after, seconds]})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(
    config: ServerConfig | None = None, *, clock: typing.Callable[[], float] = time.monotonic
) -> tuple[_Root, Stats, Outages]:
    """The emulated API as an ASGI app, with its stats and outage schedule."""
    config = config or ServerConfig()
    stats = Stats(clock)
    outages = Outages(clock, config.faults.outages)
    limiter = RateLimitMiddleware(
        UploadAPI(config.max_body),
        tiers=config.tiers,
        keys=config.keys,
        default_tier=config.default_tier,
        scopes=config.scopes,
        mode=config.mode,
        count_rejected=config.count_rejected,
        schedule=config.schedule,
        headers=config.headers,
        retry_after=config.retry_after,
        trusted_proxies=config.trusted_proxies,
        max_keys=config.max_keys,
        clock=clock,
        on_decision=stats.on_decision,
    )
    return _Root(_Faulty(limiter, config.faults, outages, stats), stats, outages, config), stats, outages
