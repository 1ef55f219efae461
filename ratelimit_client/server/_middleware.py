"""A pure ASGI middleware that enforces per-IP and per-API-key quotas, as a rate-limited API does.

Put it in front of any ASGI app::

    app = RateLimitMiddleware(app, tiers={"free": "50/minute"}, mode="sliding_log", headers="ietf")

Each request is keyed by the client IP (``X-Forwarded-For`` only when the peer is a
trusted proxy) and the API key in ``Authorization`` (Bearer, or Basic's password), which
is hashed at once and never kept. Over the quota it answers 429 with ``Retry-After`` and
``Cache-Control: no-store`` and, by option, the IETF ``RateLimit``/``RateLimit-Policy``
fields or ``X-RateLimit-*``.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import json
import math
import threading
import time
import typing

from .. import _identity
from .._exceptions import ConfigError
from .._rate import DEFAULT_TIERS, Rate, parse_rate
from ._counting import MODES, Counter, Mode, Verdict, new_counter

__all__ = ["ASGIApp", "HeaderStyle", "RateLimitMiddleware", "RequestDecision", "ServerScope", "client_ip"]

Message = typing.MutableMapping[str, typing.Any]
Receive = typing.Callable[[], typing.Awaitable[Message]]
Send = typing.Callable[[Message], typing.Awaitable[None]]
ASGIApp = typing.Callable[[typing.MutableMapping[str, typing.Any], Receive, Send], typing.Awaitable[None]]

ServerScope = typing.Literal["ip+key", "key", "ip"]
HeaderStyle = typing.Literal["none", "ietf", "x-ratelimit"]
RetryAfterStyle = typing.Literal["seconds", "fractional"]
_SCOPES: tuple[ServerScope, ...] = ("ip+key", "key", "ip")
_HEADER_STYLES: tuple[HeaderStyle, ...] = ("none", "ietf", "x-ratelimit")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclasses.dataclass(frozen=True, slots=True)
class RequestDecision:
    """What the middleware decided for one request. ``key`` is the hashed key id, never the key."""

    allowed: bool
    ip: str
    key: str
    tier: str
    verdict: Verdict
    at: float


def _networks(values: typing.Iterable[str]) -> tuple[Network, ...]:
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ConfigError("trusted_proxies", value, "IP addresses or networks such as 10.0.0.0/8") from None
    return tuple(networks)


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def client_ip(scope: typing.Mapping[str, typing.Any], trusted: typing.Sequence[Network]) -> str:
    """The client's IP: the peer, or — only when the peer is a trusted proxy — the right-most
    ``X-Forwarded-For`` address that is not itself a trusted proxy."""
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"

    def is_trusted(address: str) -> bool:
        ip = _parse_ip(address)
        return ip is not None and any(ip in network for network in trusted)

    if not trusted or not is_trusted(peer):
        return peer
    values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == b"x-forwarded-for"]
    hops = [hop.strip() for hop in ",".join(values).split(",") if hop.strip()]
    # Walk from the nearest hop: each trusted proxy vouches for the one before it.
    for hop in reversed(hops):
        if _parse_ip(hop) is None:
            return peer  # a malformed chain is not evidence of anything
        if not is_trusted(hop):
            return hop
    return hops[0] if hops else peer


def _header(scope: typing.Mapping[str, typing.Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class RateLimitMiddleware:
    """Enforce quotas in front of ``app``; see the module docstring.

    ``tiers`` maps tier names to rates (default free 50/minute, paid 200/minute);
    ``keys`` maps API keys to tier names (keys not listed get ``default_tier``).
    ``scopes`` are the identities each quota applies to: a request must fit all of them.
    ``schedule`` is ``(seconds since start, rate)`` pairs: from then on every key gets that
    rate. At most ``max_keys`` identities are remembered (least recently seen go first).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        tiers: typing.Mapping[str, Rate | str] | None = None,
        keys: typing.Mapping[str, str] | None = None,
        default_tier: str = "free",
        scopes: typing.Sequence[ServerScope] = ("ip+key",),
        mode: Mode = "gcra",
        count_rejected: bool = False,
        schedule: typing.Sequence[tuple[float, Rate | str]] = (),
        headers: HeaderStyle = "none",
        retry_after: RetryAfterStyle = "seconds",
        trusted_proxies: typing.Sequence[str] = (),
        max_keys: int = 100_000,
        exempt: typing.Sequence[str] = (),
        namespace: str = "ratelimit-server",
        clock: typing.Callable[[], float] = time.monotonic,
        wall_clock: typing.Callable[[], float] = time.time,
        on_decision: typing.Callable[[RequestDecision], None] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigError("mode", mode, f"one of {', '.join(MODES)}")
        if headers not in _HEADER_STYLES:
            raise ConfigError("headers", headers, f"one of {', '.join(_HEADER_STYLES)}")
        if retry_after not in ("seconds", "fractional"):
            raise ConfigError("retry_after", retry_after, "'seconds' or 'fractional'")
        if not scopes or any(s not in _SCOPES for s in scopes):
            raise ConfigError("scopes", list(scopes), f"one or more of {', '.join(_SCOPES)}")
        if not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigError("max_keys", max_keys, "an integer of at least 1")
        self.app = app
        self.tiers = {name: parse_rate(rate, field=f"tiers.{name}") for name, rate in (tiers or DEFAULT_TIERS).items()}
        if default_tier not in self.tiers:
            raise ConfigError("default_tier", default_tier, f"one of {', '.join(sorted(self.tiers))}")
        self.namespace = namespace
        for tier in (keys or {}).values():
            if tier not in self.tiers:
                raise ConfigError("keys", tier, f"one of {', '.join(sorted(self.tiers))}")
        # Only hashes are kept: the raw keys are dropped once mapped.
        self._key_tiers = {_identity.key_id(k, namespace): t for k, t in (keys or {}).items()}
        self.default_tier = default_tier
        self.scopes = tuple(scopes)
        self.mode: Mode = mode
        self.count_rejected = count_rejected
        self._schedule = sorted((float(at), parse_rate(rate, field="schedule")) for at, rate in schedule)
        self.header_style: HeaderStyle = headers
        self.retry_after_style: RetryAfterStyle = retry_after
        self._trusted = _networks(trusted_proxies)
        self.max_keys = max_keys
        self._exempt = tuple(exempt)
        self._clock = clock
        self._wall_clock = wall_clock
        self._started = clock()
        self._on_decision = on_decision
        self._lock = threading.Lock()
        self._counters: collections.OrderedDict[str, Counter] = collections.OrderedDict()

    def __repr__(self) -> str:
        return f"<RateLimitMiddleware mode={self.mode!r} scopes={self.scopes!r} keys={len(self._counters)}>"

    @property
    def tracked(self) -> int:
        """How many identities are remembered now (at most ``max_keys``)."""
        return len(self._counters)

    def rate_for(self, tier: str, now: float) -> Rate:
        """The rate enforced on ``tier`` at ``now`` (the schedule overrides the tiers)."""
        rate = self.tiers[tier]
        for at, scheduled in self._schedule:
            if now - self._started >= at:
                rate = scheduled
        return rate

    def start_schedule(self, now: float | None = None) -> None:
        """Count the ``schedule``'s times from ``now`` (default: the clock now), not from creation."""
        self._started = self._clock() if now is None else now

    def decide(self, ip: str, key: str, now: float) -> RequestDecision:
        """Admit or refuse one request from ``ip`` with hashed key ``key`` at ``now``, and charge it."""
        tier = self._key_tiers.get(key, self.default_tier)
        rate = self.rate_for(tier, now)
        names = [self._name(scope, ip, key) for scope in self.scopes]
        with self._lock:
            counters = [self._counter(name) for name in names]
            verdicts = [counter.check(rate, now) for counter in counters]
            allowed = all(v.allowed for v in verdicts)
            if allowed or self.count_rejected:
                for counter in counters:
                    counter.record(rate, now, admitted=allowed)
        # The binding verdict: the one that refused for longest, else the tightest.
        verdict = max(verdicts, key=lambda v: (not v.allowed, v.retry_after, -v.remaining))
        decision = RequestDecision(allowed, ip, key, tier, verdict, now)
        if self._on_decision is not None:
            self._on_decision(decision)
        return decision

    @staticmethod
    def _name(scope: ServerScope, ip: str, key: str) -> str:
        return {"ip+key": f"ip={ip}|key={key}", "key": f"key={key}", "ip": f"ip={ip}"}[scope]

    def _counter(self, name: str) -> Counter:
        counter = self._counters.get(name)
        if counter is None:
            if len(self._counters) >= self.max_keys:
                self._counters.popitem(last=False)
            counter = self._counters[name] = new_counter(self.mode)
        else:
            self._counters.move_to_end(name)
        return counter

    def identify(self, scope: typing.Mapping[str, typing.Any]) -> tuple[str, str]:
        """(client IP, hashed API key) for an ASGI request scope."""
        api_key = _identity.api_key_from_authorization(_header(scope, b"authorization"))
        return client_ip(scope, self._trusted), _identity.key_id(api_key, self.namespace)

    async def __call__(self, scope: typing.MutableMapping[str, typing.Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(self._exempt or ("\0",)):
            await self.app(scope, receive, send)
            return
        ip, key = self.identify(scope)
        decision = self.decide(ip, key, self._clock())
        extra = self.headers_for(decision)
        if not decision.allowed:
            await _send_json(send, 429, {"error": "rate limited", "retry_after": decision.verdict.retry_after}, extra)
            return
        if not extra:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def headers_for(self, decision: RequestDecision) -> list[tuple[bytes, bytes]]:
        """The rate-limit headers for ``decision``: Retry-After on a refusal, plus the chosen style."""
        verdict = decision.verdict
        headers: list[tuple[bytes, bytes]] = []
        if not decision.allowed:
            if self.retry_after_style == "seconds":
                retry = str(max(1, math.ceil(verdict.retry_after)))
            else:
                retry = f"{verdict.retry_after:.3f}"
            headers += [(b"retry-after", retry.encode()), (b"cache-control", b"no-store")]
        reset = verdict.retry_after if not decision.allowed else verdict.reset
        if self.header_style == "ietf":
            policy = f'"{decision.tier}";q={verdict.limit};w={max(1, math.ceil(verdict.window))}'
            state = f'"{decision.tier}";r={verdict.remaining};t={math.ceil(reset)}'
            headers += [(b"ratelimit-policy", policy.encode()), (b"ratelimit", state.encode())]
        elif self.header_style == "x-ratelimit":
            headers += [
                (b"x-ratelimit-limit", str(verdict.limit).encode()),
                (b"x-ratelimit-remaining", str(verdict.remaining).encode()),
                (b"x-ratelimit-reset", str(math.ceil(self._wall_clock() + reset)).encode()),
            ]
        return headers


async def _send_json(send: Send, status: int, body: object, headers: typing.Sequence[tuple[bytes, bytes]] = ()) -> None:
    """A tiny ASGI response: an early answer needs no framework."""
    payload = json.dumps(body).encode()
    start_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*start_headers, *headers]})
    await send({"type": "http.response.body", "body": payload})
