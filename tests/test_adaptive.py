"""Learning the server's limit: header interpretation (table-driven) and the controller on a fake clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratelimit_client import ConfigError
from ratelimit_client._adaptive import (
    AdaptiveConfig,
    Learned,
    Observation,
    QuotaPolicy,
    observe,
    rate_at,
    update,
)

NOW = 1_700_000_000.0  # epoch seconds
PER_MIN = 1 / 60


def _obs(*headers: tuple[str, str], status: int = 200) -> Observation:
    return observe(headers, status=status, now=NOW)


# -- reading the server ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # draft -08+: named policies, state by name
        (
            [("RateLimit-Policy", '"default";q=100;w=60'), ("RateLimit", '"default";r=40;t=12')],
            [QuotaPolicy(100, 60, 40, 12)],
        ),
        # draft -07: a bare quota with w, and the dictionary form of RateLimit
        (
            [("RateLimit-Policy", "100;w=60"), ("RateLimit", "limit=100, remaining=3, reset=7")],
            [QuotaPolicy(100, 60, 3, 7)],
        ),
        # draft -07 dictionary alone: the quota is known, its window is not
        ([("RateLimit", "limit=10, remaining=0, reset=5")], [QuotaPolicy(10, None, 0, 5)]),
        # draft -06: separate fields, with a quota policy in RateLimit-Limit
        (
            [("RateLimit-Limit", "50, 50;w=60"), ("RateLimit-Remaining", "9"), ("RateLimit-Reset", "30")],
            [QuotaPolicy(50, 60, 9, 30)],
        ),
        ([("RateLimit-Limit", "50"), ("RateLimit-Remaining", "9")], [QuotaPolicy(50, None, 9, None)]),
        # X-RateLimit-*: epoch reset, delta reset, duration reset
        (
            [("X-RateLimit-Limit", "60"), ("X-RateLimit-Remaining", "6"), ("X-RateLimit-Reset", str(int(NOW) + 30))],
            [QuotaPolicy(60, None, 6, 30)],
        ),
        (
            [("X-RateLimit-Limit", "60"), ("X-RateLimit-Remaining", "6"), ("X-RateLimit-Reset", "20")],
            [QuotaPolicy(60, None, 6, 20)],
        ),
        (
            [("X-RateLimit-Limit", "60"), ("X-RateLimit-Remaining", "6"), ("X-RateLimit-Reset", "6m0s")],
            [QuotaPolicy(60, None, 6, 360)],
        ),
        # nothing about limits
        ([("Content-Type", "text/plain")], []),
    ],
)
def test_observe_reads_every_dialect(headers: list[tuple[str, str]], expected: list[QuotaPolicy]) -> None:
    assert list(_obs(*headers).policies) == expected


def test_several_policies_the_binding_one_wins() -> None:
    observation = _obs(
        ("RateLimit-Policy", '"minute";q=50;w=60, "hour";q=1000;w=3600'),
        ("RateLimit", '"minute";r=45;t=10, "hour";r=5;t=600'),
    )
    binding = observation.binding_rate
    assert binding is not None
    assert (binding.requests, binding.per_seconds) == (1000, 3600)  # 16.7/minute beats 50/minute
    # what remains: 45 in 10 s (4.5/s) against 5 in 600 s: the hour binds
    assert observation.spread == pytest.approx(5 / 600)


def test_repeated_field_lines_combine() -> None:
    observation = _obs(("RateLimit-Policy", '"a";q=10;w=1'), ("RateLimit-Policy", '"b";q=100;w=60'))
    assert [(p.quota, p.window) for p in observation.policies] == [(10, 1), (100, 60)]


@pytest.mark.parametrize(
    "headers",
    [
        [("RateLimit-Policy", '"p";q=-5;w=60')],
        [("RateLimit-Policy", '"p";q=abc;w=60')],
        [("RateLimit-Policy", '"p";q=1e400;w=60')],
        [("RateLimit-Policy", '"p";q=99999999999;w=60')],
        [("RateLimit-Policy", '"p";q=10;w=99999999999')],
        [("X-RateLimit-Limit", "lots")],
        [("X-RateLimit-Limit", "10"), ("X-RateLimit-Reset", "NaN")],
        [("RateLimit-Policy", "x" * 100_000)],
    ],
)
def test_malformed_or_absurd_values_are_ignored_and_counted(headers: list[tuple[str, str]]) -> None:
    observation = _obs(*headers)
    assert observation.ignored >= 1
    assert all(p.quota > 0 and p.quota <= 1e9 for p in observation.policies)
    assert all(p.window is None or 0 < p.window <= 366 * 86400 for p in observation.policies)


@given(name=st.sampled_from(["RateLimit", "RateLimit-Policy", "RateLimit-Limit", "X-RateLimit-Limit",
                             "X-RateLimit-Remaining", "X-RateLimit-Reset", "RateLimit-Reset"]),
       value=st.text(max_size=200), status=st.sampled_from([200, 429, 503]))  # fmt: skip
def test_any_header_text_gives_sane_observation(name: str, value: str, status: int) -> None:
    observation = observe([(name, value), ("X-RateLimit-Limit", "10")], status=status, now=NOW)
    for policy in observation.policies:
        assert math.isfinite(policy.quota)
        assert policy.quota > 0
        for field in (policy.window, policy.remaining, policy.reset):
            assert field is None or (math.isfinite(field) and field >= 0)
    spread = observation.spread
    assert spread is None or (math.isfinite(spread) and spread >= 0)


# -- the controller -------------------------------------------------------------------------

PAID = 199 * PER_MIN  # the configured pacing for 200/minute
CONFIG = AdaptiveConfig(probe=60.0)


def test_advertised_lower_quota_lowers_at_once_keeping_the_margin() -> None:
    observation = _obs(("RateLimit-Policy", '"p";q=50;w=60'))
    learned = update(None, observation, NOW, CONFIG, PAID)
    assert learned is not None
    assert learned.rate == pytest.approx(49 * PER_MIN)
    assert rate_at(learned, NOW + 1, CONFIG, PAID) == pytest.approx(49 * PER_MIN)
    # the same news again changes nothing: no rewrite of the shared state per response
    assert update(learned, observation, NOW + 1, CONFIG, PAID) is None


def test_configured_tier_is_a_ceiling_unless_discovery_is_allowed() -> None:
    observation = _obs(("RateLimit-Policy", '"p";q=400;w=60'))
    assert update(None, observation, NOW, CONFIG, PAID) is None
    discovering = AdaptiveConfig(probe=60.0, discover=True)
    learned = update(None, observation, NOW, discovering, PAID)
    assert learned is not None
    assert learned.rate == pytest.approx(399 * PER_MIN)


def test_low_remaining_spreads_what_is_left_until_the_reset() -> None:
    observation = _obs(("RateLimit-Policy", '"p";q=200;w=60'), ("RateLimit", '"p";r=10;t=20'))
    learned = update(None, observation, NOW, CONFIG, PAID)
    assert learned is not None
    assert learned.rate == pytest.approx(10 / 20)
    assert learned.expires == pytest.approx(NOW + 20)
    assert rate_at(learned, NOW + 21, CONFIG, PAID) == PAID  # after the reset, back to the ceiling


def test_429_without_headers_cuts_once_per_burst_then_climbs_back() -> None:
    throttled = Observation(throttled=True)
    cut = update(None, throttled, NOW, CONFIG, PAID)
    assert cut is not None
    assert cut.rate == pytest.approx(PAID * 0.7)
    # fifteen processes reporting the same burst within the cooldown: one cut only
    assert update(cut, throttled, NOW + 0.5, CONFIG, PAID) is None
    # CUBIC: back to the old rate after `probe` seconds, monotonic on the way
    samples = [rate_at(cut, NOW + t, CONFIG, PAID) for t in range(0, 61, 5)]
    assert samples == sorted(samples)
    assert samples[0] == pytest.approx(PAID * 0.7)
    assert samples[-1] == pytest.approx(PAID)


def test_repeated_cuts_stop_at_the_floor() -> None:
    config = AdaptiveConfig(probe=60.0, floor=PAID / 10)
    learned: Learned | None = None
    for second in range(0, 200, 5):
        learned = update(learned, Observation(throttled=True), NOW + second, config, PAID) or learned
    assert learned is not None
    assert rate_at(learned, learned.since, config, PAID) == pytest.approx(PAID / 10)


def test_headers_mode_ignores_bare_429s() -> None:
    assert update(None, Observation(throttled=True), NOW, AdaptiveConfig(mode="headers"), PAID) is None
    assert update(None, _obs(("RateLimit-Policy", "10;w=60")), NOW, AdaptiveConfig(mode="off"), PAID) is None


def test_learned_values_expire() -> None:
    learned = update(None, _obs(("RateLimit-Policy", "50;w=60")), NOW, AdaptiveConfig(ttl=30), PAID)
    assert learned is not None
    assert rate_at(learned, NOW + 29, CONFIG, PAID) < PAID
    assert rate_at(learned, NOW + 30, CONFIG, PAID) == PAID


def test_learned_round_trips_and_rejects_garbage() -> None:
    learned = Learned(1.5, NOW, NOW + 60, "why", w_max=2.0)
    assert Learned.decode(learned.encode()) == learned
    paused = Learned(1.5, NOW, NOW + 60, "why", paused_until=NOW + 5)
    assert Learned.decode(paused.encode()) == paused
    # A record written before paused_until existed still reads, with no pause.
    assert Learned.decode('{"rate": 1.5, "since": 0, "expires": 60, "reason": "old"}') == Learned(1.5, 0, 60, "old")
    for garbage in (
        None, "", "{", "[]", '{"rate": "x"}', '{"rate": -1, "since": 0, "expires": 1, "reason": ""}',
        '{"rate": 1, "since": 0, "expires": 1, "reason": "", "paused_until": "soon"}',
        '{"rate": 1, "since": 0, "expires": 1, "reason": "", "paused_until": Infinity}',
    ):  # fmt: skip
        assert Learned.decode(garbage) is None


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("adaptive", {"mode": "sometimes"}),
        ("adaptive_beta", {"beta": 1.5}),
        ("adaptive_probe", {"probe": 0}),
        ("adaptive_ttl", {"ttl": -1}),
        ("adaptive_floor", {"floor": 0}),
    ],
)
def test_invalid_adaptive_config_names_the_field(field: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as caught:
        AdaptiveConfig(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
