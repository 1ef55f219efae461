"""Which limits a request falls under, and their keys and buckets (ratelimit_client._limiter)."""

from __future__ import annotations

import pytest

from ratelimit_client import ConfigError, Limit, Rate
from ratelimit_client._gcra import Bucket, KeyState, reserve
from ratelimit_client._identity import key_id
from ratelimit_client._limiter import Limiter

KEY_A = "key-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
KEY_B = "key-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"


def test_limit_parses_its_rate() -> None:
    assert Limit("50/minute") == Limit(Rate(50, 60), per="ip+key")
    assert str(Limit("200/min", per="key")) == "200/60s per key"


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"rate": "fast"}, "limit.rate"),
        ({"rate": "50/min", "per": "host"}, "limit.per"),
        ({"rate": "50/min", "burst": 0}, "limit.burst"),
        ({"rate": "50/min", "burst": 2.5}, "limit.burst"),
        ({"rate": "50/min", "burst": True}, "limit.burst"),
    ],
)
def test_limit_rejects(arguments: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Limit(**arguments)  # type: ignore[arg-type]
    assert info.value.field == field


def test_a_limiter_needs_a_limit() -> None:
    with pytest.raises(ConfigError) as info:
        Limiter([], namespace="ns")
    assert info.value.field == "limits"


def test_buckets_follow_the_safe_pacing() -> None:
    limiter = Limiter([Limit("50/minute"), Limit("1000/hour", per="key", burst=10)], namespace="ns")
    assert limiter.buckets == (Bucket(60 / 49, 1), Bucket(3600 / 990, 10))


def test_buckets_for_a_token_bucket_server_take_the_full_rate() -> None:
    limiter = Limiter([Limit("50/minute")], namespace="ns", server_counting="token_bucket")
    assert limiter.buckets == (Bucket(60 / 50, 1),)


def test_key_id_is_the_hmac_in_the_limiters_namespace() -> None:
    limiter = Limiter([Limit("50/minute")], namespace="acme")
    assert limiter.key_id(KEY_A) == key_id(KEY_A, "acme")
    assert limiter.key_id(KEY_A) == limiter.key_id(KEY_A)  # cached
    assert limiter.key_id(None) == "anonymous"


def test_separate_ip_and_key_pairs_get_separate_keys() -> None:
    limiter = Limiter([Limit("50/minute")], namespace="ns")
    a, b = limiter.key_id(KEY_A), limiter.key_id(KEY_B)
    pairs = [("10.0.0.1", a), ("10.0.0.1", b), ("10.0.0.2", a), ("10.0.0.2", b)]
    keys = [limiter.keys(ip, kid) for ip, kid in pairs]
    assert len(set(keys)) == 4
    assert all(len(k) == 1 for k in keys)
    assert limiter.keys("10.0.0.1", a) == keys[0]


def test_stacked_limits_give_one_key_per_limit_in_bucket_order() -> None:
    limiter = Limiter(
        [
            Limit("50/minute"),
            Limit("200/minute", per="key"),
            Limit("100/minute", per="ip"),
            Limit("1000/hour", "global"),
        ],
        namespace="ns",
    )
    a, b = limiter.key_id(KEY_A), limiter.key_id(KEY_B)
    one = limiter.keys("10.0.0.1", a)
    assert len(one) == len(limiter.buckets) == 4
    # Per key across all IPs: the same key from another IP shares limit 1, not limit 0.
    other_ip = limiter.keys("10.0.0.2", a)
    assert [x == y for x, y in zip(one, other_ip, strict=True)] == [False, True, False, True]
    # Per IP: another key from the same IP shares limit 2.
    other_key = limiter.keys("10.0.0.1", b)
    assert [x == y for x, y in zip(one, other_key, strict=True)] == [False, False, True, True]


def test_two_limits_of_one_scope_keep_separate_state() -> None:
    limiter = Limiter([Limit("50/minute", per="key"), Limit("1000/day", per="key")], namespace="ns")
    first, second = limiter.keys("10.0.0.1", limiter.key_id(KEY_A))
    assert first != second


def test_stacked_limits_admit_only_when_every_limit_admits() -> None:
    # 5/second per (ip, key) and 6/minute per key, burst 3: the per-key limit binds after
    # three requests although each IP is far under its own limit. (A token-bucket server
    # keeps the arithmetic round: intervals 0.2 s and 10 s.)
    limits = [Limit("5/second", burst=5), Limit("6/minute", per="key", burst=3)]
    limiter = Limiter(limits, namespace="ns", server_counting="token_bucket")
    states: dict[str, KeyState] = {}
    kid = limiter.key_id(KEY_A)
    waits = []
    for ip in ["10.0.0.1", "10.0.0.2"] * 3:
        keys = limiter.keys(ip, kid)
        decision = reserve([states.get(k) for k in keys], limiter.buckets, 0.0)
        assert decision.states is not None
        states.update(zip(keys, decision.states, strict=True))
        waits.append(decision.wait)
    assert waits == [0.0, 0.0, 0.0, 10.0, 20.0, 30.0]


def test_storage_keys_and_repr_never_contain_the_api_key() -> None:
    limiter = Limiter([Limit("50/minute"), Limit("200/minute", per="key")], namespace="ns")
    keys = limiter.keys("10.0.0.1", limiter.key_id(KEY_A))
    assert all(KEY_A not in k for k in keys)
    assert KEY_A not in repr(limiter)
    assert repr(limiter) == "<Limiter [50/60s per ip+key, 200/60s per key] namespace='ns'>"


def test_caches_stay_bounded() -> None:
    limiter = Limiter([Limit("50/minute")], namespace="ns")
    for n in range(5000):
        limiter.keys(f"10.0.{n // 256}.{n % 256}", limiter.key_id(f"key-{n}"))
    # Still correct after the caches were cleared on the way.
    assert limiter.keys("10.0.0.0", limiter.key_id("key-0")) == limiter.keys("10.0.0.0", key_id("key-0", "ns"))


def test_keys_for_is_keys_of_the_key_id_and_stays_bounded() -> None:
    limiter = Limiter([Limit("50/minute"), Limit("200/minute", per="key")], namespace="ns")
    assert limiter.keys_for("10.0.0.1", KEY_A) == limiter.keys("10.0.0.1", limiter.key_id(KEY_A))
    assert limiter.keys_for("10.0.0.1", KEY_A) is limiter.keys_for("10.0.0.1", KEY_A)  # cached
    assert limiter.keys_for("10.0.0.1", None) == limiter.keys("10.0.0.1", "anonymous")
    assert limiter.keys_for("10.0.0.2", KEY_A) != limiter.keys_for("10.0.0.1", KEY_A)
    for n in range(5000):
        limiter.keys_for(f"10.0.{n // 256}.{n % 256}", f"key-{n}")
    assert len(limiter._by_identity) <= 4096
    assert limiter.keys_for("10.0.0.0", "key-0") == limiter.keys("10.0.0.0", key_id("key-0", "ns"))
