"""Who a request is from (ratelimit_client._identity): the API key and its hashed name."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratelimit_client._identity import ANONYMOUS, api_key_from_authorization, key_id, local_ip_for

KEY = "wandb-0123456789abcdef0123456789abcdef01234567"


def basic(credentials: str | bytes) -> str:
    raw = credentials.encode() if isinstance(credentials, str) else credentials
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"Bearer {KEY}", KEY),
        (f"bearer {KEY}", KEY),
        (f"BEARER   {KEY}  ", KEY),
        (f"  Bearer {KEY}", KEY),
        (basic(f"api:{KEY}"), KEY),  # W&B: the key is the password
        (basic(f"{KEY}:"), KEY),  # Stripe, `curl -u key:`: the key is the user
        (basic(KEY), KEY),  # no colon at all
        (basic(f"user:{KEY}:with:colons"), f"{KEY}:with:colons"),
        (f"basic {base64.b64encode(f'api:{KEY}'.encode()).decode()}", KEY),
    ],
)
def test_api_key_from_authorization(header: str, expected: str) -> None:
    assert api_key_from_authorization(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "Bearer",
        "Bearer   ",
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic YXBpOmtle",  # truncated, bad padding
        basic(b"api:\xff\xfe"),  # not UTF-8
        basic(":"),
        basic(""),
        f"Token {KEY}",
        f"Digest username={KEY}",
        f"ApiKey {KEY}",
        KEY,
    ],
)
def test_malformed_or_other_schemes_carry_no_key(header: str | None) -> None:
    assert api_key_from_authorization(header) is None


def test_key_id_is_stable_and_namespace_dependent() -> None:
    assert key_id(KEY, "acme") == key_id(KEY, "acme")
    assert key_id(KEY, "acme") != key_id(KEY, "other")
    assert key_id(KEY, "acme") != key_id(KEY + "x", "acme")
    assert len(key_id(KEY, "acme")) == 32
    int(key_id(KEY, "acme"), 16)  # hex


def test_key_id_follows_its_documented_derivation() -> None:
    # Every process and host, in any version or language (the Redis backend's peers),
    # must derive the same name for the same key, or they stop sharing a bucket.
    digest = hmac.new(b"ratelimit-client/v1/acme", KEY.encode(), hashlib.sha256).hexdigest()
    assert key_id(KEY, "acme") == digest[:32]


def test_no_key_is_anonymous() -> None:
    assert key_id(None, "acme") == ANONYMOUS


@given(key=st.text(min_size=4), namespace=st.text(min_size=1, max_size=64))
def test_key_id_never_contains_the_key(key: str, namespace: str) -> None:
    name = key_id(key, namespace)
    assert key not in name
    assert len(name) == 32
    assert name != ANONYMOUS


def test_local_ip_for_loopback() -> None:
    # A connected UDP socket sends nothing: this needs no network beyond loopback.
    assert local_ip_for("127.0.0.1", 9) == "127.0.0.1"


def test_local_ip_for_an_unresolvable_host_is_none() -> None:
    assert local_ip_for("name.invalid", 443) is None
