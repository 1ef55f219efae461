"""Limiter backends, chosen by URL.

==========================================  ==============================================
``memory://``                               this process only
``sqlite://``                               every process on this host, through a file in
                                            the user cache directory (the default)
``sqlite:///path/to/limits.db``             the same, through that file (an absolute path)
``redis://host:6379/0``, ``rediss://…``,    every process on every host using that Redis
``unix:///run/redis.sock``                  server; ``?fallback=memory`` (default) limits
                                            locally while it is down, ``?fallback=fail``
                                            raises; ``?probe_interval=1`` (seconds)
``redis://node:7000/0?cluster=true``        the same through a Redis Cluster (any node;
                                            ``redis://`` or ``rediss://``)
==========================================  ==============================================
"""

from __future__ import annotations

import typing
import urllib.parse

from .._events import redact_url
from .._exceptions import ConfigError
from ._base import Backend, Reservation
from ._fallback import FallbackBackend
from ._memory import MemoryBackend
from ._redis import RedisBackend
from ._sqlite import MAX_BUSY_TIMEOUT, SQLiteBackend, default_sqlite_path

if typing.TYPE_CHECKING:
    from .._events import Event

__all__ = [
    "SCHEMES",
    "Backend",
    "FallbackBackend",
    "MemoryBackend",
    "RedisBackend",
    "Reservation",
    "SQLiteBackend",
    "backend_from_url",
    "check_url",
    "default_sqlite_path",
    "shown_url",
]

SCHEMES = ("memory", "sqlite", "redis", "rediss", "unix")
_REDIS_SCHEMES = ("redis", "rediss", "unix")
_FALLBACKS = ("memory", "fail")
_BOOLEANS = {"true": True, "false": False}
# Our own options: their values are never secrets, and show what a backend will do.
_OURS = frozenset({"fallback", "probe_interval", "cluster", "busy_timeout"})


def shown_url(url: str) -> str:
    """``url`` fit for messages and output: no user info, no query value but our options'."""
    return redact_url(url, keep=_OURS)


def check_url(url: str, *, field: str = "backend") -> str:
    """The URL's scheme, after checking it names a backend and its options are valid."""
    scheme = _split(url, field).scheme.lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ConfigError(
            field, shown_url(url), f"a URL whose scheme is one of {', '.join(s + '://' for s in SCHEMES)}"
        )
    _options(url, scheme, field)
    return scheme


def _split(url: str, field: str) -> urllib.parse.SplitResult:
    # urllib (and redis-py after it) raise a bare ValueError for an unclosed "[" or a bad
    # port: refuse those here, naming the field and keeping the password out.
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - parsed (and checked) on access
    except ValueError as exc:
        raise ConfigError(field, shown_url(url), f"a valid URL ({exc})") from None
    return parts


def _options(url: str, scheme: str, field: str) -> dict[str, str]:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    if scheme == "sqlite":
        if parts.netloc:
            raise ConfigError(field, shown_url(url), "sqlite:// (the default file) or sqlite:///absolute/path")
        unknown = set(query) - {"busy_timeout"}
    elif scheme in _REDIS_SCHEMES:
        if query.get("fallback", "memory") not in _FALLBACKS:
            raise ConfigError(f"{field} fallback", query["fallback"], f"one of {', '.join(_FALLBACKS)}")
        cluster = query.get("cluster", "false")
        if cluster not in _BOOLEANS:
            raise ConfigError(f"{field} cluster", cluster, "true or false")
        if _BOOLEANS[cluster] and scheme == "unix":
            raise ConfigError(field, shown_url(url), "a redis:// or rediss:// URL for a Redis Cluster (not unix://)")
        unknown = set()
    else:
        unknown = set(query)
    if unknown:
        raise ConfigError(
            field, shown_url(url), f"no options other than those documented ({', '.join(sorted(unknown))} given)"
        )
    if scheme == "sqlite" and "\0" in urllib.parse.unquote(parts.path):
        raise ConfigError(field, shown_url(url), "a file path without a NUL character (%00)")
    _check_seconds(query, field)
    return query


def _check_seconds(query: dict[str, str], field: str) -> None:
    for name in ("busy_timeout", "probe_interval"):
        if name in query:
            try:
                value = float(query[name])
            except ValueError:
                value = -1.0
            # inf would mean never: a busy timeout that fails at once (sqlite3 overflows
            # its milliseconds), or a Redis that is never asked again.
            if not 0 <= value <= MAX_BUSY_TIMEOUT:
                raise ConfigError(f"{field} {name}", query[name], f"a number of seconds from 0 to {MAX_BUSY_TIMEOUT:g}")


def backend_from_url(url: str, *, namespace: str, emit: typing.Callable[[Event, int], None] | None = None) -> Backend:
    """A backend for ``url`` (see the module docstring); ``emit`` receives fallback events."""
    scheme = check_url(url)
    query = _options(url, scheme, "backend")
    if scheme == "memory":
        return MemoryBackend()
    if scheme == "sqlite":
        path = urllib.parse.unquote(urllib.parse.urlsplit(url).path) or None
        return SQLiteBackend(path, namespace=namespace, busy_timeout=float(query.get("busy_timeout", 5.0)))
    # Our options are not redis-py's: strip them before it parses the URL.
    ours = {"fallback", "probe_interval", "cluster"}
    base, _, query_text = url.partition("?")
    rest = urllib.parse.urlencode([(k, v) for k, v in urllib.parse.parse_qsl(query_text) if k not in ours])
    cluster = _BOOLEANS[query.get("cluster", "false")]  # checked by _options
    redis = RedisBackend(f"{base}?{rest}" if rest else base, namespace=namespace, cluster=cluster)
    if query.get("fallback", "memory") == "fail":
        return redis
    probe = float(query.get("probe_interval", 1.0))
    return (
        FallbackBackend(redis, probe_interval=probe, emit=emit)
        if emit
        else FallbackBackend(redis, probe_interval=probe)
    )
