"""Full-jitter backoff and the retry budget (ratelimit_client._backoff), with injected randomness and clock."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratelimit_client._backoff import RetryBudget, full_jitter


def constant(value: float) -> random.Random:
    class Fixed(random.Random):
        def random(self) -> float:
            return value

    return Fixed()


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (7, 30.0), (8, 30.0), (50, 30.0)],
)
def test_ceiling_doubles_per_attempt_up_to_the_cap(attempt: int, ceiling: float) -> None:
    # random() → just under 1 gives just under the ceiling, 0 gives 0: the draw spans [0, ceiling).
    top = math.nextafter(1.0, 0.0)
    assert full_jitter(attempt, base=0.5, cap=30.0, random=constant(top).random) == pytest.approx(ceiling)
    assert full_jitter(attempt, base=0.5, cap=30.0, random=constant(0.0).random) == 0.0


def test_draw_scales_the_ceiling() -> None:
    assert full_jitter(3, base=0.5, cap=30.0, random=constant(0.25).random) == 0.5


def test_jitter_is_kept_at_the_cap() -> None:
    # Clients that failed together must not retry together, even after many attempts.
    rng = random.Random(1234)
    waits = {full_jitter(40, base=1.0, cap=10.0, random=rng.random) for _ in range(200)}
    assert len(waits) == 200
    assert all(0.0 <= w < 10.0 for w in waits)
    assert min(waits) < 2.5
    assert max(waits) > 7.5


@pytest.mark.parametrize("attempt", [61, 1_000, 10**6, 2**62, 10**30])
def test_huge_attempt_numbers_do_not_overflow(attempt: int) -> None:
    assert full_jitter(attempt, base=0.5, cap=30.0, random=constant(0.5).random) == 15.0


def test_base_above_cap_is_held_to_cap() -> None:
    assert full_jitter(1, base=100.0, cap=5.0, random=constant(0.5).random) == 2.5


@given(
    attempt=st.integers(min_value=-5, max_value=10**9),
    base=st.floats(0, 1e6),
    cap=st.floats(0, 1e6),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_wait_always_within_bounds(attempt: int, base: float, cap: float, draw: float) -> None:
    result = full_jitter(attempt, base=base, cap=cap, random=constant(draw).random)
    assert math.isfinite(result)
    assert 0.0 <= result <= cap
    assert result <= base * 2.0 ** min(max(attempt - 1, 0), 60)


# --- retry budget -----------------------------------------------------------------------


def test_budget_starts_with_ten_seconds_of_floor() -> None:
    budget = RetryBudget(ratio=0.0, min_per_second=1.0)
    assert [budget.withdraw(0.0) for _ in range(11)] == [True] * 10 + [False]


def test_budget_floor_refills_at_min_per_second_up_to_its_cap() -> None:
    budget = RetryBudget(ratio=0.0, min_per_second=2.0)
    while budget.withdraw(0.0):
        pass
    assert not budget.withdraw(0.25)  # half a retry earned
    assert budget.withdraw(0.5)  # one whole retry at 2/s after 0.5 s
    assert not budget.withdraw(0.5)
    # A long quiet spell saves at most min_per_second·10 retries.
    assert sum(budget.withdraw(10_000.0) for _ in range(100)) == 20


def test_budget_deposits_a_share_of_a_retry_per_request() -> None:
    budget = RetryBudget(ratio=0.2, min_per_second=0.0)
    assert not budget.withdraw(0.0)
    for _ in range(4):
        budget.deposit()
    assert not budget.withdraw(0.0)  # 0.8 of a retry is not one
    budget.deposit()
    assert budget.withdraw(0.0)
    assert not budget.withdraw(0.0)


def test_budget_bounds_retries_to_a_ratio_of_requests() -> None:
    # 1000 requests at 20 % give 200 retries, plus the floor's 10 saved: never more.
    budget = RetryBudget(ratio=0.2, min_per_second=1.0)
    for _ in range(1000):
        budget.deposit()
    assert sum(budget.withdraw(0.0) for _ in range(1000)) == 210


def test_budget_balance_is_capped() -> None:
    budget = RetryBudget(ratio=1.0, min_per_second=0.0)
    for _ in range(5000):
        budget.deposit()
    assert sum(budget.withdraw(0.0) for _ in range(5000)) == 1000


@given(counts=st.lists(st.integers(min_value=0, max_value=3000), max_size=8), ratio=st.floats(0.0, 1.0))
def test_budget_deposits_paid_at_once_count_as_paid_one_by_one(counts: list[int], ratio: float) -> None:
    at_once = RetryBudget(ratio=ratio, min_per_second=0.0)
    one_by_one = RetryBudget(ratio=ratio, min_per_second=0.0)
    for count in counts:
        at_once.deposit(count)
        for _ in range(count):
            one_by_one.deposit()
        assert at_once._balance == pytest.approx(one_by_one._balance, abs=1e-6)
        assert at_once.withdraw(0.0) == one_by_one.withdraw(0.0)


def test_budget_clock_going_back_mints_nothing() -> None:
    budget = RetryBudget(ratio=0.0, min_per_second=1.0)
    while budget.withdraw(100.0):
        pass
    assert not budget.withdraw(50.0)
    assert not budget.withdraw(50.5)  # 0.5 s after the step back: half a retry
    assert budget.withdraw(51.0)
