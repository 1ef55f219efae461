"""How each counting mode decides, on an injected clock: no server, no sleeping."""

from __future__ import annotations

import pytest

from ratelimit_client import Rate
from ratelimit_client.server import RateLimitMiddleware
from ratelimit_client.server._counting import new_counter

from ._asgi import Clock

FIVE_PER_10S = Rate(5, 10)


async def _app(scope: object, receive: object, send: object) -> None:  # pragma: no cover - never reached here
    raise AssertionError("decide() does not call the app")


def _limiter(clock: Clock, **options: object) -> RateLimitMiddleware:
    return RateLimitMiddleware(_app, tiers={"free": "5/10s", "paid": "20/10s"}, clock=clock, **options)  # type: ignore[arg-type]


def _admitted(limiter: RateLimitMiddleware, clock: Clock, times: list[float], ip: str = "1.1.1.1") -> list[bool]:
    out = []
    for at in times:
        clock.now = at
        out.append(limiter.decide(ip, "k", at).allowed)
    return out


def test_gcra_allows_a_burst_of_the_quota_then_one_per_interval() -> None:
    counter = new_counter("gcra")
    verdicts = []
    for _ in range(6):
        verdict = counter.check(FIVE_PER_10S, 1000.0)
        verdicts.append(verdict)
        if verdict.allowed:
            counter.record(FIVE_PER_10S, 1000.0, admitted=True)
    assert [v.allowed for v in verdicts] == [True] * 5 + [False]
    assert [v.remaining for v in verdicts[:5]] == [4, 3, 2, 1, 0]
    assert verdicts[5].retry_after == pytest.approx(2.0)  # one interval: 10 s / 5
    assert not counter.check(FIVE_PER_10S, 1001.99).allowed
    assert counter.check(FIVE_PER_10S, 1002.0).allowed


def test_fixed_window_resets_at_the_window_edge_and_admits_a_double_burst_there() -> None:
    clock = Clock()
    limiter = _limiter(clock, mode="fixed_window")
    # Window [1000, 1010): five at 1009, a sixth refused until the edge.
    assert _admitted(limiter, clock, [1009.0] * 6) == [True] * 5 + [False]
    clock.now = 1009.5
    refused = limiter.decide("1.1.1.1", "k", 1009.5)
    assert refused.verdict.retry_after == pytest.approx(0.5)
    # The fixed window's known weakness: ten within one second across the edge.
    assert _admitted(limiter, clock, [1010.0] * 5) == [True] * 5


def test_sliding_log_admits_at_most_the_quota_in_any_window() -> None:
    clock = Clock()
    limiter = _limiter(clock, mode="sliding_log")
    assert _admitted(limiter, clock, [1009.0] * 5 + [1010.0]) == [True] * 5 + [False]
    refused = limiter.decide("1.1.1.1", "k", 1010.0)
    assert refused.verdict.retry_after == pytest.approx(9.0)  # the oldest leaves the window at 1019
    assert _admitted(limiter, clock, [1018.99, 1019.0]) == [False, True]


def test_sliding_log_reset_and_remaining() -> None:
    counter = new_counter("sliding_log")
    counter.record(FIVE_PER_10S, 100.0, admitted=True)
    verdict = counter.check(FIVE_PER_10S, 101.0)
    assert (verdict.allowed, verdict.remaining, verdict.limit, verdict.window) == (True, 3, 5, 10.0)
    assert counter.idle(FIVE_PER_10S, 110.0)


@pytest.mark.parametrize("mode", ["gcra", "sliding_log"])
def test_counting_rejected_attempts_keeps_a_hammering_client_out(mode: str) -> None:
    hammering = [1000.0 + i for i in range(40)]  # one attempt a second, 5 allowed per 10 s
    lenient = _admitted(_limiter(Clock(), mode=mode), Clock(), hammering)
    strict_limiter = _limiter(Clock(), mode=mode, count_rejected=True)
    strict = _admitted(strict_limiter, Clock(), hammering)
    assert sum(strict) < sum(lenient)
    assert strict[:5] == [True] * 5


def test_a_fixed_window_refuses_the_same_whether_or_not_refusals_count() -> None:
    # Its count only resets at the edge, so charging refusals changes nothing.
    hammering = [1000.0 + i for i in range(40)]
    lenient = _admitted(_limiter(Clock(), mode="fixed_window"), Clock(), hammering)
    strict = _admitted(_limiter(Clock(), mode="fixed_window", count_rejected=True), Clock(), hammering)
    assert strict == lenient
    assert sum(strict) == 20


def test_gcra_lockout_under_counting_rejected_is_bounded() -> None:
    clock = Clock()
    limiter = _limiter(clock, mode="gcra", count_rejected=True)
    _admitted(limiter, clock, [1000.0] * 1000)
    # However long it hammered, it is out for at most tolerance + one window.
    assert _admitted(limiter, clock, [1020.0]) == [True]


def test_schedule_changes_the_enforced_rate() -> None:
    clock = Clock(0.0)
    limiter = _limiter(clock, mode="sliding_log", schedule=[(100.0, "1/10s")])
    assert limiter.rate_for("free", 50.0) == Rate(5, 10)
    assert limiter.rate_for("free", 100.0) == Rate(1, 10)
    assert _admitted(limiter, clock, [50.0] * 5) == [True] * 5
    assert _admitted(limiter, clock, [200.0, 200.0]) == [True, False]


def test_a_paid_key_gets_the_paid_tier_and_the_key_is_only_kept_hashed() -> None:
    clock = Clock()
    limiter = _limiter(clock, keys={"secret-paid-key": "paid"})
    _, paid_id = limiter.identify(
        {"headers": [(b"authorization", b"Bearer secret-paid-key")], "client": ("1.1.1.1", 1)}
    )
    decision = limiter.decide("1.1.1.1", paid_id, 1000.0)
    assert (decision.tier, decision.verdict.limit) == ("paid", 20)
    assert "secret-paid-key" not in repr(vars(limiter)) + repr(decision)
    assert all("secret-paid-key" not in name for name in limiter._counters)


def test_memory_is_bounded_however_many_identities_it_sees() -> None:
    clock = Clock()
    limiter = _limiter(clock, max_keys=50)
    for i in range(2000):
        limiter.decide(f"10.0.{i // 256}.{i % 256}", f"key{i}", 1000.0)
    assert limiter.tracked == 50


def test_every_scope_must_admit() -> None:
    clock = Clock()
    limiter = _limiter(clock, scopes=("ip+key", "key"))
    # Two IPs, one key: the per-key quota (5) binds before either per-IP+key quota does.
    outcomes = [limiter.decide(f"10.0.0.{i % 2}", "k", 1000.0).allowed for i in range(8)]
    assert outcomes == [True] * 5 + [False] * 3
    assert limiter.decide("10.0.0.9", "other", 1000.0).allowed
