"""Which limits a request falls under, and the storage keys and buckets for them.

Knows nothing of httpx or of storage: it turns (client IP, API key) into the keys the
backend charges atomically.
"""

from __future__ import annotations

import dataclasses
import typing

from . import _identity
from ._exceptions import ConfigError
from ._gcra import Bucket
from ._rate import Rate, ServerCounting, check_burst, pacing_for, parse_rate

__all__ = ["Limit", "Limiter", "Scope"]

Scope = typing.Literal["ip+key", "key", "ip", "global"]
_SCOPES: tuple[Scope, ...] = ("ip+key", "key", "ip", "global")


@dataclasses.dataclass(frozen=True, slots=True)
class Limit:
    """A server quota: ``rate`` per client IP and API key (``per="ip+key"``), per API key
    across all IPs (``"key"``), per IP (``"ip"``) or for everything (``"global"``).

    ``burst`` is how many may go at once; left unset, the limiter picks the burst and
    rate that stay inside the quota whatever the server counts with.
    """

    rate: Rate
    per: Scope = "ip+key"
    burst: int | None = None

    def __init__(self, rate: Rate | str, per: Scope = "ip+key", burst: int | None = None) -> None:
        if per not in _SCOPES:
            raise ConfigError("limit.per", per, f"one of {', '.join(_SCOPES)}")
        if burst is not None:
            check_burst(burst, field="limit.burst")
        object.__setattr__(self, "rate", parse_rate(rate, field="limit.rate"))
        object.__setattr__(self, "per", per)
        object.__setattr__(self, "burst", burst)

    def __str__(self) -> str:
        return f"{self.rate} per {self.per}"


class Limiter:
    """Maps a request's identity to the keys and buckets of every limit it falls under."""

    __slots__ = ("_buckets", "_by_identity", "_cache", "_ids", "_limits", "namespace")

    def __init__(
        self,
        limits: typing.Sequence[Limit],
        *,
        namespace: str,
        server_counting: ServerCounting = "unknown",
    ) -> None:
        if not limits:
            raise ConfigError("limits", list(limits), "at least one limit")
        self._limits = tuple(limits)
        self.namespace = namespace
        buckets = []
        for limit in self._limits:
            pacing = pacing_for(limit.rate, burst=limit.burst, server=server_counting)
            buckets.append(Bucket(pacing.rate.interval, pacing.burst))
        self._buckets = tuple(buckets)
        self._ids: dict[str | None, str] = {}
        self._cache: dict[tuple[str, str], tuple[str, ...]] = {}
        # Raw API keys as dict keys, as in _ids: held in memory only, never stored or shown.
        self._by_identity: dict[tuple[str, str | None], tuple[str, ...]] = {}

    def __repr__(self) -> str:
        limits = ", ".join(str(limit) for limit in self._limits)
        return f"<Limiter [{limits}] namespace={self.namespace!r}>"

    @property
    def limits(self) -> tuple[Limit, ...]:
        return self._limits

    @property
    def buckets(self) -> tuple[Bucket, ...]:
        return self._buckets

    def key_id(self, api_key: str | None) -> str:
        """The hashed name of ``api_key`` (cached: HMAC on every request is wasted work)."""
        found = self._ids.get(api_key)
        if found is None:
            if len(self._ids) >= 4096:
                self._ids.clear()
            found = self._ids[api_key] = _identity.key_id(api_key, self.namespace)
        return found

    def keys(self, ip: str, key_id: str) -> tuple[str, ...]:
        """Storage keys, in the order of :attr:`buckets`, for a request from ``ip`` with ``key_id``."""
        found = self._cache.get((ip, key_id))
        if found is None:
            if len(self._cache) >= 4096:
                self._cache.clear()
            found = self._cache[ip, key_id] = tuple(
                _storage_key(index, limit.per, ip, key_id) for index, limit in enumerate(self._limits)
            )
        return found

    def keys_for(self, ip: str, api_key: str | None) -> tuple[str, ...]:
        """``keys(ip, key_id(api_key))`` in one cached lookup: what a request needs, per request."""
        found = self._by_identity.get((ip, api_key))
        if found is None:
            if len(self._by_identity) >= 4096:
                self._by_identity.clear()
            found = self._by_identity[ip, api_key] = self.keys(ip, self.key_id(api_key))
        return found


def _storage_key(index: int, per: Scope, ip: str, key_id: str) -> str:
    # The limit's position and scope name it, so two limits on the same identity (per
    # minute and per hour, say) keep separate state.
    parts = {"ip+key": f"ip={ip}|key={key_id}", "key": f"key={key_id}", "ip": f"ip={ip}", "global": "all"}
    return f"L{index}:{per}:{parts[per]}"
