"""The middleware over ASGI: responses, headers in each style, trusted proxies."""

from __future__ import annotations

import json
import time

import pytest

from ratelimit_client._headers import server_wait
from ratelimit_client.server import RateLimitMiddleware, UploadAPI, client_ip
from ratelimit_client.server._middleware import _networks

from ._asgi import Clock, call

pytestmark = pytest.mark.anyio

AUTH = [("Authorization", "Bearer k-123")]


def _app(clock: Clock, **options: object) -> RateLimitMiddleware:
    return RateLimitMiddleware(UploadAPI(1024), tiers={"free": "2/10s"}, clock=clock, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["gcra", "fixed_window", "sliding_log"])
async def test_over_the_quota_answers_429_with_retry_after_and_no_store(mode: str) -> None:
    clock = Clock()
    app = _app(clock, mode=mode)
    statuses = [(await call(app, headers=AUTH))[0] for _ in range(2)]
    status, headers, body = await call(app, headers=AUTH)
    assert statuses == [200, 200]
    assert status == 429
    assert headers["cache-control"] == "no-store"
    assert int(headers["retry-after"]) >= 1
    assert json.loads(body)["error"] == "rate limited"
    # Its wait is what the client library reads back.
    hint = server_wait(list(headers.items()), now=time.time())
    assert hint is not None
    assert hint.wait == int(headers["retry-after"])


async def test_fractional_retry_after_keeps_sub_second_waits() -> None:
    clock = Clock()
    app = RateLimitMiddleware(UploadAPI(1024), tiers={"free": "4/second"}, clock=clock, retry_after="fractional")
    for _ in range(4):
        await call(app)
    _, headers, _ = await call(app)
    assert float(headers["retry-after"]) == pytest.approx(0.25)


async def test_ietf_headers_on_success_and_refusal() -> None:
    clock = Clock()
    app = _app(clock, headers="ietf", mode="sliding_log")
    _, ok, _ = await call(app, headers=AUTH)
    assert ok["ratelimit-policy"] == '"free";q=2;w=10'
    assert ok["ratelimit"] == '"free";r=1;t=10'
    await call(app, headers=AUTH)
    clock.now += 4
    status, refused, _ = await call(app, headers=AUTH)
    assert status == 429
    assert refused["ratelimit"] == '"free";r=0;t=6'
    without_retry_after = [(k, v) for k, v in refused.items() if k != "retry-after"]
    hint = server_wait(without_retry_after, now=time.time())
    assert hint is not None
    assert hint.wait == 6


async def test_x_ratelimit_headers_give_an_epoch_reset() -> None:
    clock = Clock()
    app = _app(clock, headers="x-ratelimit", wall_clock=lambda: 2_000_000_000.0)
    await call(app)
    await call(app)
    status, headers, _ = await call(app)
    assert status == 429
    assert (headers["x-ratelimit-limit"], headers["x-ratelimit-remaining"]) == ("2", "0")
    assert headers["x-ratelimit-reset"] == str(2_000_000_000 + 5)  # gcra: one interval away


async def test_no_rate_headers_unless_asked() -> None:
    _, headers, _ = await call(_app(Clock()))
    assert not any(name.startswith(("ratelimit", "x-ratelimit", "retry-after")) for name in headers)


async def test_exempt_paths_are_not_counted() -> None:
    app = _app(Clock(), exempt=("/ping",))
    statuses = [(await call(app, path="/ping", method="GET"))[0] for _ in range(5)]
    assert statuses == [200] * 5
    assert app.tracked == 0


async def test_spoofed_forwarded_for_is_ignored_from_an_untrusted_peer() -> None:
    app = _app(Clock(), trusted_proxies=["10.0.0.1"])
    statuses = [
        (await call(app, headers=[("X-Forwarded-For", f"198.51.100.{i}")], client=("203.0.113.9", 1)))[0]
        for i in range(3)
    ]
    assert statuses == [200, 200, 429]  # all counted against the real peer


async def test_forwarded_for_is_honoured_from_a_trusted_proxy() -> None:
    app = _app(Clock(), trusted_proxies=["10.0.0.0/8"])
    statuses = [
        (await call(app, headers=[("X-Forwarded-For", f"198.51.100.{i}")], client=("10.0.0.1", 1)))[0] for i in range(3)
    ]
    assert statuses == [200, 200, 200]  # three clients behind one proxy


def test_client_ip_walks_the_chain_from_the_nearest_hop() -> None:
    trusted = _networks(["10.0.0.0/8"])

    def scope(peer: str, xff: str) -> dict[str, object]:
        return {"client": (peer, 1), "headers": [(b"x-forwarded-for", xff.encode())]}

    # The client forged the first entry; the proxies appended what they saw.
    assert client_ip(scope("10.0.0.1", "1.2.3.4, 198.51.100.5, 10.0.0.2"), trusted) == "198.51.100.5"
    assert client_ip(scope("10.0.0.1", "not-an-ip"), trusted) == "10.0.0.1"
    assert client_ip(scope("203.0.113.1", "198.51.100.5"), trusted) == "203.0.113.1"
    assert client_ip(scope("10.0.0.1", "10.0.0.3"), trusted) == "10.0.0.3"
    assert client_ip({"client": None}, trusted) == "unknown"
