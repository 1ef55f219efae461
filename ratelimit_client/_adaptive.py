"""Learning the server's real limit from its responses. Pure: no I/O, the clock is passed in.

Two halves:

- :func:`observe` reads what one response says about the limit: advertised quotas
  (``RateLimit-Policy``, ``RateLimit-Limit``, ``X-RateLimit-Limit``), what remains and when
  it resets (``RateLimit``, ``RateLimit-Remaining``/``-Reset``, ``X-RateLimit-*``), whether
  it was a 429. Malformed or absurd fields are skipped and counted, never trusted.
- :func:`update` turns an observation into a new :class:`Learned` rate for the fleet, and
  :func:`rate_at` says what that learned rate is now.

Rules: an advertised quota sets the rate to the safe pacing for it (keeping the margin);
``remaining`` over the time to ``reset`` spreads what is left evenly when that is slower;
a 429 that says nothing usable about the quota cuts the rate by ``beta`` (once per
cooldown, so fifteen processes hit by one burst cut once, not fifteen times), after which
the rate climbs back on a CUBIC curve (as botocore's adaptive retry mode does). The
configured rate is a ceiling unless ``discover`` is set; ``floor`` stops a collapse to zero;
every learned value expires.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing

from ._exceptions import ConfigError
from ._headers import ResetFormat, parse_delay
from ._headers import _reset as reset_seconds
from ._rate import Rate, pacing_for

__all__ = ["AdaptiveConfig", "Learned", "Observation", "QuotaPolicy", "observe", "rate_at", "update"]

AdaptiveMode = typing.Literal["off", "headers", "full"]
_MAX_QUOTA = 1e9
_MAX_SECONDS = 366 * 86400.0
_MAX_FIELD = 512


@dataclasses.dataclass(frozen=True, slots=True)
class QuotaPolicy:
    """One advertised quota: ``quota`` requests per ``window`` seconds (window may be unknown)."""

    quota: float
    window: float | None = None
    remaining: float | None = None
    reset: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Observation:
    """What one response says about the server's limit."""

    policies: tuple[QuotaPolicy, ...] = ()
    throttled: bool = False
    ignored: int = 0  # malformed or absurd fields skipped

    @property
    def binding_rate(self) -> Rate | None:
        """The advertised quota with the lowest sustained rate (per minute and per hour: the tighter)."""
        rates = [Rate(p.quota, p.window) for p in self.policies if p.window is not None]
        return min(rates, key=lambda r: r.per_second) if rates else None

    @property
    def spread(self) -> float | None:
        """Requests per second that spend what remains evenly until it resets (the slowest).

        A policy whose reset is a whole window away or more is skipped: a sliding-window or
        token-bucket server says so of a client paced at the quota on every response (a
        request or two remaining, whole again one window later) while it frees capacity
        all along, and spreading those few requests over the window would collapse the rate.
        """
        spreads = [
            p.remaining / p.reset
            for p in self.policies
            if p.remaining is not None
            and p.reset is not None
            and p.reset > 0
            and p.remaining > 0
            and (p.window is None or p.reset < p.window)
        ]
        return min(spreads) if spreads else None


class _Reader:
    """Collects fields, counting the ones it had to skip."""

    def __init__(self) -> None:
        self.ignored = 0

    def number(self, text: str | None, *, limit: float) -> float | None:
        if text is None:
            return None
        value = parse_delay(text.strip().strip('"'))
        if value is None or value > limit:
            self.ignored += 1
            return None
        return value


def _items(value: str) -> list[tuple[str, dict[str, str]]]:
    # Structured-field lists: `"name";q=100;w=60, "hour";q=1000;w=3600` or `100;w=60`.
    items = []
    for item in value.split(","):
        head, *params = item.split(";")
        named = {}
        for param in params:
            key, _, raw = param.partition("=")
            named[key.strip().lower()] = raw.strip()
        items.append((head.strip().strip('"'), named))
    return items


def observe(
    headers: typing.Iterable[tuple[str, str]],
    *,
    status: int,
    now: float,
    reset_format: ResetFormat = "auto",
) -> Observation:
    """Read a response's rate-limit headers. ``now`` is the local time in epoch seconds."""
    fields: dict[str, str] = {}
    reader = _Reader()
    for name, value in headers:
        key = name.lower()
        if not (key.startswith(("ratelimit", "x-ratelimit"))):
            continue
        if len(value) > _MAX_FIELD:
            reader.ignored += 1
            continue
        fields[key] = f"{fields[key]}, {value}" if key in fields else value

    policies = _ietf_policies(fields, reader) + _x_policies(fields, reader, now, reset_format)
    return Observation(tuple(policies), throttled=status == 429, ignored=reader.ignored)


def _ietf_policies(fields: dict[str, str], reader: _Reader) -> list[QuotaPolicy]:
    quotas = _ietf_quotas(fields, reader)
    state = _ietf_state(fields, reader, quotas)
    policies = []
    for name, (quota, window) in quotas.items():
        remaining, reset = state.get(name, (None, None))
        if name not in state and len(quotas) == 1 and len(state) == 1:
            # One policy and one state under different names (mixed drafts): they pair up.
            remaining, reset = next(iter(state.values()))
        policies.append(QuotaPolicy(quota, window, remaining, reset))
    return policies


def _ietf_quotas(fields: dict[str, str], reader: _Reader) -> dict[str, tuple[float, float | None]]:
    quotas: dict[str, tuple[float, float | None]] = {}
    for head, params in _items(fields.get("ratelimit-policy", "")):
        # Draft -08+ names the policy and gives `q`; draft -07 gives the quota bare.
        name, quota_text = (head, params["q"]) if "q" in params else ("", head)
        quota = reader.number(quota_text or None, limit=_MAX_QUOTA)
        window = reader.number(params.get("w"), limit=_MAX_SECONDS)
        if quota is not None and quota > 0 and window != 0:
            quotas[name] = (quota, window)
    if "ratelimit-limit" in fields and "" not in quotas:
        # Draft -06: `RateLimit-Limit: 100`, maybe with a quota policy: `100, 100;w=60`.
        head, params = _items(fields["ratelimit-limit"])[-1]
        limit = reader.number(head, limit=_MAX_QUOTA)
        window = reader.number(params.get("w"), limit=_MAX_SECONDS)
        if limit is not None and limit > 0:
            quotas[""] = (limit, window or None)
    return quotas


def _ietf_state(
    fields: dict[str, str], reader: _Reader, quotas: dict[str, tuple[float, float | None]]
) -> dict[str, tuple[float | None, float | None]]:
    state: dict[str, tuple[float | None, float | None]] = {}
    current = fields.get("ratelimit")
    if current is not None and ";" in current:  # draft -08+: `"name";r=50;t=30`
        for head, params in _items(current):
            state[head] = (
                reader.number(params.get("r"), limit=_MAX_QUOTA),
                reader.number(params.get("t"), limit=_MAX_SECONDS),
            )
    elif current is not None:  # draft -07 dictionary: `limit=100, remaining=50, reset=30`
        values = {k.strip().lower(): v for k, _, v in (p.partition("=") for p in current.split(","))}
        limit = reader.number(values.get("limit"), limit=_MAX_QUOTA)
        if limit is not None and limit > 0 and "" not in quotas:
            quotas[""] = (limit, None)
        state[""] = (
            reader.number(values.get("remaining"), limit=_MAX_QUOTA),
            reader.number(values.get("reset"), limit=_MAX_SECONDS),
        )
    if "ratelimit-remaining" in fields or "ratelimit-reset" in fields:  # draft -06
        state.setdefault(
            "",
            (
                reader.number(fields.get("ratelimit-remaining"), limit=_MAX_QUOTA),
                reader.number(fields.get("ratelimit-reset"), limit=_MAX_SECONDS),
            ),
        )
    return state


def _x_policies(fields: dict[str, str], reader: _Reader, now: float, reset_format: ResetFormat) -> list[QuotaPolicy]:
    if "x-ratelimit-limit" not in fields:
        return []
    items = _items(fields["x-ratelimit-limit"])
    # "50" or "50, 50;w=60": the quota comes first; a later item may give its window.
    head, params = next(((h, p) for h, p in items if "w" in p or "window" in p), items[0])
    quota = reader.number(head, limit=_MAX_QUOTA)
    if quota is None or quota <= 0:
        return []
    window = reader.number(params.get("w") or params.get("window"), limit=_MAX_SECONDS)
    remaining = reader.number(fields.get("x-ratelimit-remaining", "").split(",")[0] or None, limit=_MAX_QUOTA)
    reset = None
    if "x-ratelimit-reset" in fields:
        reset = reset_seconds(fields["x-ratelimit-reset"].split(",")[0].strip(), now, reset_format)
        if reset is None or not math.isfinite(reset) or reset > _MAX_SECONDS:
            reader.ignored += 1
            reset = None
    return [QuotaPolicy(quota, window or None, remaining, reset)]


@dataclasses.dataclass(frozen=True, slots=True)
class AdaptiveConfig:
    """How the client learns. Rates are requests per second; times are seconds.

    ``mode``: ``"off"``, ``"headers"`` (learn from rate-limit headers only) or ``"full"``
    (headers, and cut the rate on a 429 that says nothing usable). ``beta`` is the
    multiplicative cut; ``probe`` the seconds the rate takes to climb back to where it was
    before a cut (CUBIC's K; default 60, and the transports use the quota's window);
    ``floor`` the lowest rate (default: a twentieth of the configured one); ``ttl`` how
    long a learned value lasts; ``discover`` allows rates above the configured one.
    """

    mode: AdaptiveMode = "full"
    beta: float = 0.7
    probe: float = 60.0
    floor: float | None = None
    ttl: float = 600.0
    discover: bool = False
    cooldown: float | None = None  # default: a twentieth of ``probe``

    def __post_init__(self) -> None:
        if self.mode not in ("off", "headers", "full"):
            raise ConfigError("adaptive", self.mode, "'off', 'headers' or 'full'")
        checks = (
            ("adaptive_beta", self.beta, 0 < self.beta < 1, "a number between 0 and 1"),
            ("adaptive_probe", self.probe, self.probe > 0, "a positive number"),
            ("adaptive_ttl", self.ttl, self.ttl > 0, "a positive number of seconds"),
        )
        for field, value, ok, allowed in checks:
            if not (math.isfinite(value) and ok):
                raise ConfigError(field, value, allowed)
        if self.cooldown is not None and not (math.isfinite(self.cooldown) and self.cooldown >= 0):
            raise ConfigError("adaptive_cooldown", self.cooldown, "a number of seconds, 0 or more")
        if self.floor is not None and not (math.isfinite(self.floor) and self.floor > 0):
            raise ConfigError("adaptive_floor", self.floor, "a positive rate")


@dataclasses.dataclass(frozen=True, slots=True)
class Learned:
    """The fleet's learned rate for a key, stored in the backend beside the bucket.

    ``rate`` holds from ``since`` until ``expires`` (epoch seconds). After a cut,
    ``w_max`` is the rate before it and the rate climbs back on a CUBIC curve.
    ``paused_until`` (epoch seconds) ends the last pause a server told with a 429: a
    process waking inside it, on a slot reserved before it, queues again behind it.
    """

    rate: float
    since: float
    expires: float
    reason: str
    w_max: float | None = None
    paused_until: float | None = None

    def encode(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | bytes | None) -> Learned | None:
        """A stored value, or None when it is absent or not one of ours (never raises)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            learned = cls(
                rate=float(data["rate"]),
                since=float(data["since"]),
                expires=float(data["expires"]),
                reason=str(data["reason"])[:200],
                w_max=None if data.get("w_max") is None else float(data["w_max"]),
                # Absent from records written before it existed.
                paused_until=None if data.get("paused_until") is None else float(data["paused_until"]),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        numbers = (learned.rate, learned.since, learned.expires, learned.w_max or 1.0, learned.paused_until or 1.0)
        if not all(math.isfinite(n) for n in numbers) or learned.rate <= 0:
            return None
        return learned


def _floor(config: AdaptiveConfig, ceiling: float) -> float:
    return config.floor if config.floor is not None else ceiling / 20


def rate_at(learned: Learned | None, now: float, config: AdaptiveConfig, ceiling: float) -> float:
    """The rate (requests per second) to pace at now: learned if it holds, else ``ceiling``."""
    if config.mode == "off" or learned is None or now >= learned.expires:
        return ceiling
    rate = learned.rate
    if learned.w_max is not None:
        # CUBIC: W(t) = C·(t - K)³ + W_max with W(0) = β·W_max (the rate right after the
        # cut) and W(K) = W_max: concave up to the old rate, then convex beyond it.
        k = config.probe
        scale = learned.w_max * (1 - config.beta) / k**3
        elapsed = max(0.0, now - learned.since)
        rate = scale * (elapsed - k) ** 3 + learned.w_max
    rate = max(rate, _floor(config, ceiling))
    return rate if config.discover else min(rate, ceiling)


def update(
    learned: Learned | None,
    observation: Observation,
    now: float,
    config: AdaptiveConfig,
    ceiling: float,
    *,
    pause: float = 0.0,
) -> Learned | None:
    """The new learned value after ``observation``, or None when nothing should change.

    ``ceiling`` is the configured pacing rate (requests per second); ``pause`` the wait
    the server told with a 429, during which nothing is sent.
    """
    if config.mode == "off":
        return None
    current = rate_at(learned, now, config, ceiling)
    target: float | None = None
    expires = now + config.ttl
    reason = ""
    binding = observation.binding_rate
    if binding is not None:
        target = pacing_for(binding).rate.per_second
        reason = f"server advertises {binding.requests:g} per {binding.per_seconds:g} s"
    spread = observation.spread
    if spread is not None and spread < (target if target is not None else current):
        target = spread
        reset = min(p.reset for p in observation.policies if p.reset is not None and p.remaining)
        expires = now + max(reset, 0.001)
        reason = f"spreading what remains until the reset in {reset:.1f} s"
    if target is not None:
        if not config.discover:
            target = min(target, ceiling)
        target = max(target, _floor(config, ceiling))
        if learned is not None and learned.w_max is None and _close(target, learned.rate) and now < learned.expires:
            return None  # already known: do not rewrite the shared state on every response
        if learned is None and _close(target, ceiling):
            return None
        return Learned(target, now, expires, reason)
    if observation.throttled and config.mode == "full":
        # One cut per burst of 429s: those still arriving were sent at the old rate. The
        # cooldown scales with the probe (so with the quota's window) or a time-compressed
        # run would never cut twice while the curve climbs back.
        cooldown = max(config.probe / 20 if config.cooldown is None else config.cooldown, 2 / current)
        if learned is not None and learned.w_max is not None and now - learned.since < cooldown:
            return None  # this burst of 429s was already answered by a cut
        cut = max(current * config.beta, _floor(config, ceiling))
        # The curve starts climbing when sending resumes: a pause as long as the probe
        # would otherwise undo the cut before a single request went at the cut rate.
        since = now + max(pause, 0.0)
        reason = f"429 with no quota in its headers: cut by {config.beta:g}x"
        return Learned(cut, since, max(expires, since + config.ttl), reason, w_max=current)
    return None


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 0.01 * max(a, b)
