"""The httpx adapters: thin wrappers that run the engine around an inner transport."""

from __future__ import annotations

import collections.abc
import dataclasses
import ipaddress
import os
import sys
import time
import typing

import httpx

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # pragma: no cover
    from typing_extensions import Unpack

from ._adaptive import AdaptiveMode
from ._backends import Backend, backend_from_url
from ._body import DEFAULT_SPOOL_THRESHOLD
from ._config import Settings, load_settings
from ._effects import AsyncIO, SyncIO
from ._engine import Engine
from ._events import Event, Monitor, Status, TransportStatistics, install_log_filter
from ._exceptions import ConfigError
from ._headers import ResetFormat
from ._limiter import Limit, Limiter
from ._rate import Rate, ServerCounting
from ._retry import RetryPolicy

if typing.TYPE_CHECKING:
    from ._engine import Steps

__all__ = ["AsyncRateLimitTransport", "RateLimitTransport"]


# Options that are settings: they may also come from the environment or a file.
_SETTINGS = (
    "tier", "tiers", "rate", "burst", "server_counting", "namespace", "retry", "max_wait", "adaptive", "adaptive_beta",
    "adaptive_probe", "adaptive_floor", "adaptive_ttl", "adaptive_discover", "reset_formats",
)  # fmt: skip


class _Shared:
    """What both transports hold: settings, backend, limiter, monitor and engine."""

    def __init__(self, options: Options) -> None:
        unknown = set(options) - set(Options.__annotations__)
        if unknown:
            name = sorted(unknown)[0]
            raise ConfigError("option", name, f"one of {', '.join(sorted(Options.__annotations__))}")
        backend = options.get("backend")
        given_backend = backend if backend is not None and not isinstance(backend, str) else None
        if given_backend is not None and not isinstance(given_backend, Backend):
            raise ConfigError("backend", backend, "a backend URL or a Backend object")
        spool_threshold = options.get("spool_threshold", DEFAULT_SPOOL_THRESHOLD)
        if isinstance(spool_threshold, bool) or not isinstance(spool_threshold, int) or spool_threshold < 0:
            raise ConfigError("spool_threshold", spool_threshold, "a number of bytes, 0 or more")
        _check_options(options)
        # httpx logs full URLs: mask query-string credentials before any request is made.
        install_log_filter("httpx")
        self.settings: Settings = load_settings(
            config_file=options.get("config_file"),
            # A Backend object wins over the environment and the file as any argument does: a
            # URL that always parses stands in for it, so theirs are not even read.
            backend="memory://" if given_backend is not None else backend,
            **typing.cast("dict[str, typing.Any]", {name: options.get(name) for name in _SETTINGS}),
        )
        if given_backend is not None:
            self.settings = dataclasses.replace(self.settings, backend=f"<{type(given_backend).__name__}>")
        settings = self.settings
        self.owns_backend = given_backend is None
        self.monitor = Monitor(options.get("on_event"), time.monotonic)
        self.backend: Backend = given_backend or backend_from_url(
            settings.backend, namespace=settings.namespace, emit=self.monitor.emit
        )
        quota = Limit(settings.quota, "ip+key", settings.burst)
        self.limiter = Limiter(
            [quota, *options.get("limits", ())], namespace=settings.namespace, server_counting=settings.server_counting
        )
        self.engine = Engine(
            self.limiter,
            settings.retry,
            self.monitor,
            api_key=options.get("api_key"),
            ip=options.get("ip"),
            max_wait=settings.max_wait,
            spool_threshold=spool_threshold,
            adaptive=settings.adaptive_config(),
            ceiling=settings.pacing_rate(),
            reset_formats=settings.reset_formats,
        )

    def describe(self, name: str) -> str:
        return f"<{name} {self.limiter!r} backend={self.backend!r} status={self.monitor.status.value!r}>"


def _check_options(options: Options) -> None:
    """Refuse the options that are no settings when they are of the wrong kind, before any request."""
    on_event = options.get("on_event")
    if on_event is not None and not callable(on_event):
        raise ConfigError("on_event", on_event, "a callable taking an Event, or None")
    api_key = options.get("api_key")
    if api_key is not None and not _is_utf8(api_key):
        # A secret: only its type is shown.
        raise ConfigError("api_key", type(api_key), "a str (encodable as UTF-8) or None; the key is not shown")
    ip = options.get("ip")
    if ip is not None and not _is_ip(ip):
        raise ConfigError("ip", ip, "an IP address such as '192.0.2.1', or None (the local address towards the host)")
    limits = options.get("limits", ())
    # A str is a sequence too, and one Limit is easily passed without its list.
    if isinstance(limits, (str, bytes)) or not isinstance(limits, collections.abc.Sequence):
        raise ConfigError("limits", limits, "a sequence of Limit objects, such as [Limit('1000/hour', per='key')]")
    for index, limit in enumerate(limits):
        if not isinstance(limit, Limit):
            raise ConfigError(f"limits[{index}]", limit, "a Limit, such as Limit('1000/hour', per='key')")


def _is_utf8(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate, as os.environ makes of bytes that are not UTF-8
        return False
    return True


def _is_ip(value: object) -> bool:
    if not isinstance(value, str):
        return False  # ipaddress would take an int as an address
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class Options(typing.TypedDict, total=False):
    """Keyword options of both transports; the settings among them (all but ``limits``,
    ``api_key``, ``ip``, ``on_event`` and ``spool_threshold``) also come from the
    environment and a file."""

    tier: str | None  # "free" (50/minute, default) or "paid" (200/minute), or one of `tiers`
    tiers: typing.Mapping[str, str | Rate] | None  # the tier table: names to rates, added to free and paid
    rate: str | Rate | None  # the server's quota, overriding the tier: "50/minute"
    burst: int | None  # requests at once; unset = the safe default for `server_counting`
    server_counting: ServerCounting | None  # "unknown" (safe, default) or "token_bucket" (full quota)
    limits: typing.Sequence[Limit]  # extra limits, stacked on the tier's: all must admit
    api_key: str | None  # the key to limit by; default: from each request's Authorization
    ip: str | None  # the client IP to limit by; default: the local address towards the host
    backend: str | Backend | None  # "sqlite://" (default), "memory://", "redis://…", or a Backend object
    namespace: str | None  # storage namespace: separates unrelated users of one backend
    retry: RetryPolicy | None  # retry budgets and backoff
    max_wait: float | None  # longest wait for a slot; longer raises MaxWaitExceeded
    on_event: typing.Callable[[Event], None] | None  # called with each Event
    config_file: str | os.PathLike[str] | None  # a TOML file (or RATELIMIT_CLIENT_CONFIG)
    spool_threshold: int  # bytes of a one-shot body kept in memory before spilling to disk
    adaptive: AdaptiveMode | None  # learn the real limit: "full" (default), "headers" or "off"
    adaptive_beta: float | None  # multiplicative cut on a 429 that says nothing usable (0.7)
    adaptive_probe: float | None  # seconds to climb back after a cut (default: the quota's window)
    adaptive_floor: str | Rate | None  # the lowest learned rate (default: a twentieth of the tier's)
    adaptive_ttl: float | None  # seconds a learned rate lasts (600)
    adaptive_discover: bool | None  # allow learned rates above the tier's (tier="auto" implies it)
    reset_formats: typing.Mapping[str, ResetFormat] | None  # X-RateLimit-Reset format per host


class _Common:
    _shared: _Shared

    def __repr__(self) -> str:
        return self._shared.describe(type(self).__name__)

    @property
    def settings(self) -> Settings:
        """The effective settings, with where each value came from."""
        return self._shared.settings

    @property
    def status(self) -> Status:
        """OK, THROTTLED, or NETWORK_FAILURE while the network or server is failing."""
        return self._shared.monitor.status

    def statistics(self) -> TransportStatistics:
        """Counters since the transport was made, and the current status."""
        return self._shared.monitor.statistics()


class RateLimitTransport(_Common, httpx.BaseTransport):
    """A rate-limited, retrying transport for :class:`httpx.Client`.

    Wraps ``transport`` (httpx's own by default). Requests wait for a slot of the
    tier's limit, shared per client IP and API key through the backend; 429s, network
    failures and (for replayable requests) 5xx are retried as the retry policy says::

        transport = RateLimitTransport(tier="free")
        with httpx.Client(transport=transport) as client:
            client.post("https://api.example/upload", content=b"...", headers={"Authorization": "Bearer k"})

    Options are listed in :class:`Options`.
    """

    def __init__(self, transport: httpx.BaseTransport | None = None, **options: Unpack[Options]) -> None:
        self._shared = _Shared(options)
        self._io = SyncIO(transport or httpx.HTTPTransport(), self._shared.backend)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return _run_blocking(_drive(self._shared.engine.send(request), self._io))

    def close(self) -> None:
        self._io.transport.close()
        if self._shared.owns_backend:
            self._shared.backend.close()


class AsyncRateLimitTransport(_Common, httpx.AsyncBaseTransport):
    """A rate-limited, retrying transport for :class:`httpx.AsyncClient` (asyncio or trio).

    The same as :class:`RateLimitTransport`, awaiting instead of blocking::

        transport = AsyncRateLimitTransport(tier="free")
        async with httpx.AsyncClient(transport=transport) as client:
            await client.post("https://api.example/upload", content=b"...")
    """

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None, **options: Unpack[Options]) -> None:
        self._shared = _Shared(options)
        self._io = AsyncIO(transport or httpx.AsyncHTTPTransport(), self._shared.backend)

    def handle_async_request(self, request: httpx.Request) -> typing.Coroutine[typing.Any, typing.Any, httpx.Response]:
        # The driver's coroutine itself, not one awaiting it: one frame fewer to pass
        # through on every suspension of the request's I/O (see _effects).
        return _drive(self._shared.engine.send(request), self._io)

    async def aclose(self) -> None:
        await self._io.transport.aclose()
        if self._shared.owns_backend:
            await self._shared.backend.aclose()


T = typing.TypeVar("T")


async def _drive(steps: Steps[T], io: SyncIO | AsyncIO) -> T:
    """Perform the engine's effects until it returns: blocking with a :class:`SyncIO`,
    awaiting with an :class:`AsyncIO`. Errors (cancellation too) go back into the engine
    so it can clean up, and come out again when it re-raises them."""
    # One branch per effect rather than a perform() coroutine per effect: two fewer
    # frames on every request. (No typing.cast on this path: it is a Python call.)
    value: object = None
    error: BaseException | None = None
    while True:
        try:
            effect = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as done:
            result: T = done.value
            return result
        try:
            value = effect.run(io) if isinstance(io, SyncIO) else await effect.arun(io)
            error = None
        except BaseException as exc:  # noqa: BLE001 - handed to the engine, which re-raises
            value, error = None, exc


def _run_blocking(coroutine: typing.Coroutine[typing.Any, typing.Any, T]) -> T:
    """Run a coroutine that never suspends: the sync transport's effects all block instead.

    This lets both transports share one driver loop without an event loop.
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("a blocking effect suspended")  # pragma: no cover - a bug if reached
