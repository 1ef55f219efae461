"""A rate-limited, retrying httpx transport whose limit is shared by every process using a key."""

from ._backends import Backend, FallbackBackend, MemoryBackend, RedisBackend, Reservation, SQLiteBackend
from ._config import Settings, load_settings
from ._engine import RequestStats
from ._events import Event, EventKind, Status, TransportStatistics
from ._exceptions import (
    BackendError,
    ConfigError,
    MaxWaitExceeded,
    NetworkFailure,
    RateLimitClientError,
    RateLimited,
    RequestFailed,
    ServerError,
    ServerWaitTooLong,
)
from ._limiter import Limit, Scope
from ._rate import DEFAULT_TIERS, Rate, parse_rate
from ._retry import RetryPolicy
from ._transport import AsyncRateLimitTransport, Options, RateLimitTransport

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TIERS",
    "AsyncRateLimitTransport",
    "Backend",
    "BackendError",
    "ConfigError",
    "Event",
    "EventKind",
    "FallbackBackend",
    "Limit",
    "MaxWaitExceeded",
    "MemoryBackend",
    "NetworkFailure",
    "Options",
    "Rate",
    "RateLimitClientError",
    "RateLimitTransport",
    "RateLimited",
    "RedisBackend",
    "RequestFailed",
    "RequestStats",
    "Reservation",
    "RetryPolicy",
    "SQLiteBackend",
    "Scope",
    "ServerError",
    "ServerWaitTooLong",
    "Settings",
    "Status",
    "TransportStatistics",
    "load_settings",
    "parse_rate",
]
