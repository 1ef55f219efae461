"""The transports' retry decisions, through respx-mocked servers, for the sync and async transport.

Each scenario runs three times: the sync transport, and the async one on asyncio and on
trio. Sleeps go to a fake clock (see ``_support.Harness``), so server-told waits are
checked exactly, not timed.
"""

from __future__ import annotations

import email.utils
import time
import typing

import anyio
import httpx
import pytest
import respx
import tenacity
from _modes import by_mode, mode_fixture  # noqa: F401 - fixtures: `mode` and `anyio_backend`
from _support import URL, Harness

from ratelimit_client import (
    AsyncRateLimitTransport,
    BackendError,
    Event,
    MaxWaitExceeded,
    MemoryBackend,
    NetworkFailure,
    RateLimited,
    RateLimitTransport,
    RequestFailed,
    RequestStats,
    RetryPolicy,
    ServerError,
    ServerWaitTooLong,
    _engine,
)

pytestmark = pytest.mark.anyio

DATE = 1_700_000_000.0  # the server's clock, sent in Date: Retry-After dates are measured against it


def _date(when: float, form: str) -> str:
    """``when`` as an HTTP-date in one of RFC 9110's three forms."""
    parts = time.gmtime(when)
    if form == "imf":
        return email.utils.formatdate(when, usegmt=True)
    if form == "rfc850":
        return time.strftime("%A, %d-%b-%y %H:%M:%S GMT", parts)
    return time.asctime(parts)  # "Sun Nov  6 08:49:37 1994"


def _stats(response: httpx.Response) -> RequestStats:
    stats = response.extensions["ratelimit_client"]
    assert isinstance(stats, RequestStats)
    return stats


HINTS: list[tuple[str, dict[str, str], float]] = [
    ("delta seconds", {"Retry-After": "7"}, 7.0),
    ("decimal delta", {"Retry-After": "0.25"}, 0.25),
    ("IMF-fixdate", {"Date": _date(DATE, "imf"), "Retry-After": _date(DATE + 12, "imf")}, 12.0),
    ("RFC 850 date", {"Date": _date(DATE, "imf"), "Retry-After": _date(DATE + 9, "rfc850")}, 9.0),
    ("asctime date", {"Date": _date(DATE, "imf"), "Retry-After": _date(DATE + 4, "asctime")}, 4.0),
    ("retry-after-ms", {"retry-after-ms": "1500"}, 1.5),
    ("x-ms-retry-after-ms", {"x-ms-retry-after-ms": "250"}, 0.25),
    ("RateLimit draft-08", {"RateLimit": '"default";r=0;t=6', "RateLimit-Policy": '"default";q=50;w=60'}, 6.0),
    ("RateLimit draft-07", {"RateLimit": "limit=50, remaining=0, reset=8"}, 8.0),
    ("RateLimit-Reset draft-06", {"RateLimit-Remaining": "0", "RateLimit-Reset": "5"}, 5.0),
    ("X-RateLimit-Reset delta", {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3"}, 3.0),
    ("Retry-After wins", {"Retry-After": "2", "RateLimit": "limit=50, remaining=0, reset=40"}, 2.0),
]


@pytest.mark.parametrize(("headers", "expected"), [h[1:] for h in HINTS], ids=[h[0] for h in HINTS])
async def test_429_then_success_waits_what_the_server_said(mode: str, headers: dict[str, str], expected: float) -> None:
    router = respx.Router()
    route = router.get(URL).mock(side_effect=[httpx.Response(429, headers=headers), httpx.Response(200)])
    harness = Harness(mode, router.handler)

    response = await harness.request()

    assert response.status_code == 200
    assert route.call_count == 2
    assert harness.clock.sleeps[0] == pytest.approx(expected)
    stats = _stats(response)
    assert stats.attempts == 2
    assert stats.retry_wait == pytest.approx(expected)
    assert harness.transport.statistics().throttled == 1


async def test_x_ratelimit_reset_as_epoch_seconds(mode: str) -> None:
    reset = time.time() + 30
    router = respx.Router()
    router.get(URL).mock(
        side_effect=[httpx.Response(429, headers={"X-RateLimit-Reset": f"{reset:.0f}"}), httpx.Response(200)]
    )
    harness = Harness(mode, router.handler)
    response = await harness.request()
    assert response.status_code == 200
    # Measured against the local wall clock, to the second the header carries.
    assert 28 <= harness.clock.sleeps[0] <= 31


async def test_429_without_hint_backs_off_with_jitter(mode: str) -> None:
    router = respx.Router()
    router.get(URL).mock(side_effect=[httpx.Response(429), httpx.Response(429), httpx.Response(200)])
    harness = Harness(mode, router.handler, retry=RetryPolicy(backoff_base=0.5, backoff_max=0.75))
    response = await harness.request()
    assert response.status_code == 200
    first, second = harness.clock.sleeps
    assert 0 <= first < 0.5  # full jitter below base·2^0
    assert 0 <= second < 0.75  # below the cap, not at it


async def test_server_pause_is_applied_to_the_shared_bucket(mode: str) -> None:
    router = respx.Router()
    router.get(URL).mock(side_effect=[httpx.Response(429, headers={"Retry-After": "20"}), httpx.Response(200)])
    harness = Harness(mode, router.handler)
    limiter = harness.transport._shared.limiter
    keys = limiter.keys("192.0.2.1", limiter.key_id("key-one"))
    other = limiter.keys("192.0.2.1", limiter.key_id("key-two"))
    seen: dict[str, float] = {}

    learner = harness.transport._shared.engine.learner

    def look(seconds: float) -> None:
        # While this request backs off, ask the backend what any other caller would get
        # (pacing as this transport now does: the bare 429 also cut the learned rate).
        if not seen:
            seen["same"] = harness.backend.reserve(keys, learner.buckets(keys), max_wait=None).wait
            seen["other"] = harness.backend.reserve(other, limiter.buckets, max_wait=None).wait

    harness.clock.on_sleep = look
    await harness.request(headers={"Authorization": "Bearer key-one"})
    # within a millisecond: the learned rate climbs back on the real clock meanwhile
    assert seen["same"] == pytest.approx(20, abs=1e-3)
    assert seen["other"] == 0


@pytest.mark.parametrize(
    ("method", "headers", "unsafe", "retried"),
    [
        ("GET", {}, False, True),
        ("PUT", {}, False, True),
        ("DELETE", {}, False, True),
        ("POST", {}, False, False),
        ("PATCH", {}, False, False),
        ("POST", {"Idempotency-Key": "abc"}, False, True),
        ("POST", {}, True, True),
    ],
)
@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_retried_only_when_replaying_is_safe(
    mode: str, method: str, headers: dict[str, str], unsafe: bool, retried: bool, status: int
) -> None:
    router = respx.Router()
    route = router.route(method=method, url=URL).mock(side_effect=[httpx.Response(status), httpx.Response(200)])
    retry = RetryPolicy(backoff_base=0.001, backoff_max=0.002, retry_unsafe=unsafe)
    harness = Harness(mode, router.handler, retry=retry)

    response = await harness.request(method, headers=headers)

    if retried:
        assert (response.status_code, route.call_count, _stats(response).attempts) == (200, 2, 2)
    else:
        # Not replayable: the 5xx is the answer, handed back as it is.
        assert (response.status_code, route.call_count, _stats(response).attempts) == (status, 1, 1)


@pytest.mark.parametrize("status", [400, 401, 404, 501])
async def test_other_errors_are_answers_not_retried(mode: str, status: int) -> None:
    router = respx.Router()
    route = router.get(URL).mock(return_value=httpx.Response(status))
    harness = Harness(mode, router.handler)
    response = await harness.request()
    assert (response.status_code, route.call_count) == (status, 1)


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
@pytest.mark.parametrize("method", ["GET", "POST", "PATCH"])
async def test_failures_before_sending_are_retried_for_every_method(
    mode: str, method: str, error: type[httpx.TransportError]
) -> None:
    router = respx.Router()
    route = router.route(method=method, url=URL).mock(side_effect=[error("refused"), httpx.Response(201)])
    harness = Harness(mode, router.handler)
    response = await harness.request(method, content=b"payload")
    assert (response.status_code, route.call_count, _stats(response).attempts) == (201, 2, 2)


@pytest.mark.parametrize("error", [httpx.ReadError, httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.WriteError])
async def test_failures_after_sending_are_retried_for_replayable_requests(
    mode: str, error: type[httpx.TransportError]
) -> None:
    router = respx.Router()
    get = router.get(URL).mock(side_effect=[error("reset"), httpx.Response(200)])
    post = router.post(URL).mock(side_effect=[error("reset"), httpx.Response(200)])
    harness = Harness(mode, router.handler)

    assert (await harness.request("GET")).status_code == 200
    assert (await harness.request("POST", headers={"Idempotency-Key": "k1"})).status_code == 200
    assert (get.call_count, post.call_count) == (2, 2)


async def test_a_post_that_fails_after_sending_says_it_may_have_been_processed(mode: str) -> None:
    router = respx.Router()
    route = router.post(URL).mock(side_effect=httpx.ReadError("connection reset"))
    harness = Harness(mode, router.handler)

    with pytest.raises(NetworkFailure) as caught:
        await harness.request("POST", content=b"x")

    assert route.call_count == 1
    assert caught.value.attempts == 1
    assert "may or may not have been processed" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.ReadError)


async def test_gives_up_throttled_with_the_last_response(mode: str) -> None:
    router = respx.Router()
    route = router.get(URL).mock(return_value=httpx.Response(429, headers={"Retry-After": "1"}))
    harness = Harness(mode, router.handler)

    with pytest.raises(RateLimited) as caught:
        await harness.request()

    error = caught.value
    assert error.attempts == route.call_count == 4  # FAST.throttle_attempts
    assert error.response is not None
    assert error.response.status_code == 429
    assert harness.transport.statistics().gave_up == 1
    _no_tenacity(error)


async def test_gives_up_on_5xx_with_the_last_response(mode: str) -> None:
    router = respx.Router()
    route = router.get(URL).mock(return_value=httpx.Response(503))
    harness = Harness(mode, router.handler)

    with pytest.raises(ServerError) as caught:
        await harness.request()

    assert caught.value.attempts == route.call_count == 4
    assert caught.value.response is not None
    assert caught.value.response.status_code == 503
    _no_tenacity(caught.value)


async def test_gives_up_on_network_errors_with_the_last_error_as_cause(mode: str) -> None:
    router = respx.Router()
    route = router.get(URL).mock(side_effect=httpx.ConnectError("no route to host"))
    harness = Harness(mode, router.handler)

    with pytest.raises(NetworkFailure) as caught:
        await harness.request()

    assert caught.value.attempts == route.call_count == 4
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert "ConnectError" in str(caught.value)
    _no_tenacity(caught.value)


async def test_throttling_and_failures_have_separate_budgets(mode: str) -> None:
    router = respx.Router()
    # 3 failures then 3 throttles: each below its own budget of 4, though 6 in all.
    responses: list[typing.Any] = [httpx.ConnectError("down")] * 3 + [httpx.Response(429)] * 3 + [httpx.Response(200)]
    router.get(URL).mock(side_effect=responses)
    harness = Harness(mode, router.handler)
    response = await harness.request()
    assert (response.status_code, _stats(response).attempts) == (200, 7)


async def test_the_retry_budget_lets_a_failing_host_be_retried_by_a_share_of_requests_sent(mode: str) -> None:
    # Its floor saves up to 100 retries (10 a second); every request sent adds a share.
    failing = False

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503 if failing else 200)

    retry = RetryPolicy(
        failure_attempts=1000, failure_timeout=10_000, backoff_base=0.001, backoff_max=0.001, retry_budget_ratio=0.5
    )
    harness = Harness(mode, handler, retry=retry)
    for _ in range(40):
        await harness.request()
    failing = True
    started = time.monotonic()
    with pytest.raises(ServerError) as caught:
        await harness.request()
    elapsed = time.monotonic() - started  # the floor refills on the real clock meanwhile
    retries = caught.value.attempts - 1
    assert 100 + 20 <= retries <= 100 + 20 + 10 * elapsed + 1  # 41 requests x 0.5 = 20 whole retries
    assert "retry budget exhausted" in str(caught.value)


async def test_a_request_given_up_without_a_retry_takes_nothing_from_the_retry_budget(mode: str) -> None:
    # The budget was once charged before the policy decided: each request that gave up
    # (here: the server's wait is longer than we may sleep) spent a retry it never made,
    # and 300 of them left none for a request that could be retried.
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/long"):
            return httpx.Response(503, headers={"Retry-After": "1000"})
        flaky.append(request)
        return httpx.Response(503 if len(flaky) == 1 else 200)

    flaky: list[httpx.Request] = []
    retry = RetryPolicy(backoff_base=0.001, backoff_max=0.001, retry_budget_ratio=0)  # the floor alone
    harness = Harness(mode, handler, retry=retry)
    for _ in range(300):
        with pytest.raises(ServerWaitTooLong):
            await harness.request(url=f"{URL}/long")
    response = await harness.request()
    assert (response.status_code, _stats(response).attempts) == (200, 2)


async def test_a_server_wait_above_the_maximum_raises_at_once_without_sleeping(mode: str) -> None:
    router = respx.Router()
    route = router.get(URL).mock(return_value=httpx.Response(429, headers={"Retry-After": "3600"}))
    harness = Harness(mode, router.handler, retry=RetryPolicy(max_server_wait=60))

    with pytest.raises(ServerWaitTooLong) as caught:
        await harness.request()

    assert route.call_count == 1
    assert caught.value.wait == 3600
    assert caught.value.attempts == 1
    assert "3600" in str(caught.value)
    assert harness.clock.sleeps == []  # not slept, not even partly
    _no_tenacity(caught.value)


async def test_a_server_wait_beyond_the_time_left_in_the_budget_raises_at_once(mode: str) -> None:
    router = respx.Router()
    router.get(URL).mock(return_value=httpx.Response(503, headers={"Retry-After": "120"}))
    harness = Harness(mode, router.handler, retry=RetryPolicy(failure_timeout=60))
    with pytest.raises(ServerWaitTooLong) as caught:
        await harness.request()
    assert caught.value.wait == 120
    assert harness.clock.sleeps == []


async def test_max_wait_met_by_a_retry_says_what_came_before(mode: str) -> None:
    # The retry's slot is a minute away: the error carries the attempts made and the
    # last answer, as every give-up does, and the give-up is reported.
    router = respx.Router()
    router.get(URL).mock(return_value=httpx.Response(429))
    events: list[Event] = []
    harness = Harness(mode, router.handler, rate="1/minute", burst=1, max_wait=10, on_event=events.append)
    with pytest.raises(MaxWaitExceeded) as caught:
        await harness.request()
    assert caught.value.attempts == 1
    assert caught.value.response is not None
    assert caught.value.response.status_code == 429
    assert "gave up after 1 attempt(s), the last: 429" in str(caught.value)
    assert [e.kind for e in events][-1] == "gave_up"


async def test_max_wait_refuses_a_slot_too_far_away(mode: str) -> None:
    router = respx.Router()
    route = router.get(URL).mock(return_value=httpx.Response(200))
    harness = Harness(mode, router.handler, rate="1/second", burst=None, max_wait=0.5)
    await harness.request()
    with pytest.raises(MaxWaitExceeded) as caught:
        await harness.request()
    assert caught.value.wait > 0.5
    assert route.call_count == 1


async def test_response_extensions_report_attempts_and_slot_wait(mode: str) -> None:
    router = respx.Router()
    router.get(URL).mock(return_value=httpx.Response(200))
    harness = Harness(mode, router.handler, rate="2/second", burst=None)  # safe pacing: 1 every second
    first = await harness.request()
    second = await harness.request()
    assert _stats(first) == RequestStats(attempts=1, slot_wait=0.0, retry_wait=0.0)
    assert _stats(second).attempts == 1
    assert _stats(second).slot_wait == pytest.approx(1.0)
    statistics = harness.transport.statistics()
    assert (statistics.requests, statistics.slot_waits, statistics.waiting) == (2, 1, 0)


def _no_tenacity(error: BaseException) -> None:
    """Neither the error nor anything it chains to is a tenacity type."""
    seen: BaseException | None = error
    while seen is not None:
        assert not isinstance(seen, tenacity.RetryError)
        assert type(seen).__module__.split(".")[0] != "tenacity"
        seen = seen.__cause__ or seen.__context__
    assert isinstance(error, RequestFailed)


# -- the shared pause, seen by a concurrent request (async, on the backends' own clocks) --


@pytest.mark.parametrize("mode", ["asyncio", "trio"])
async def test_a_429_pauses_every_concurrent_caller_of_the_same_key(mode: str) -> None:
    throttled = anyio.Event()
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            throttled.set()
            return httpx.Response(429, headers={"Retry-After": "0.6"})
        return httpx.Response(200)

    backend = MemoryBackend(clock=anyio.current_time)  # follows trio's MockClock when there is one
    transport = AsyncRateLimitTransport(
        httpx.MockTransport(handler), rate="1000/second", burst=100, ip="192.0.2.1", backend=backend
    )
    results: dict[str, RequestStats] = {}

    async def get(name: str, key: str) -> None:
        request = httpx.Request("GET", URL, headers={"Authorization": f"Bearer {key}"})
        response = await transport.handle_async_request(request)
        results[name] = _stats(response)

    async with anyio.create_task_group() as tg:
        tg.start_soon(get, "first", "shared-key")
        await throttled.wait()
        tg.start_soon(get, "same key", "shared-key")
        tg.start_soon(get, "other key", "another-key")

    # The reservation's wait, computed by the backend from the pause (not a measured time).
    assert results["same key"].slot_wait > 0.3
    assert results["same key"].attempts == 1
    assert results["other key"].slot_wait == 0
    assert transport.statistics().slot_waits >= 1
    await transport.aclose()


@pytest.mark.parametrize("mode", ["asyncio", "trio"])
async def test_a_caller_already_queued_when_the_429_came_waits_for_the_pause_too(mode: str) -> None:
    pause_ends: list[float] = []
    arrivals: list[tuple[str, float]] = []
    answer = anyio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        arrivals.append((request.headers["x-name"], anyio.current_time()))
        if not pause_ends:
            await answer.wait()  # hold the 429 back until "queued" has reserved its slot
            pause_ends.append(anyio.current_time() + 0.5)
            return httpx.Response(429, headers={"Retry-After": "0.5"})
        return httpx.Response(200)

    backend = MemoryBackend(clock=anyio.current_time)
    # Paced at one request every 50 ms: "queued" gets a slot 50 ms out, before the pause.
    transport = AsyncRateLimitTransport(httpx.MockTransport(handler), rate="21/second", ip="192.0.2.1", backend=backend)

    async def get(name: str) -> None:
        response = await transport.handle_async_request(httpx.Request("GET", URL, headers={"x-name": name}))
        assert response.status_code == 200

    async with anyio.create_task_group() as tg:
        tg.start_soon(get, "first")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(get, "queued")
        await anyio.wait_all_tasks_blocked()
        assert transport.statistics().waiting == 1
        answer.set()

    # Ordering, not speed: nothing of this key reached the server before the pause ended.
    assert next(name for name, _ in arrivals) == "first"
    assert sorted(name for name, _ in arrivals) == ["first", "first", "queued"]
    assert all(when >= pause_ends[0] for _, when in arrivals[1:])
    assert transport.statistics().throttled == 1


# -- the adapters themselves --


def test_the_sync_transport_wraps_and_closes_its_inner_transport() -> None:
    closed: list[str] = []

    class Inner(httpx.MockTransport):
        def close(self) -> None:
            closed.append("inner")

    with httpx.Client(transport=RateLimitTransport(Inner(lambda r: httpx.Response(204)), ip="192.0.2.1")) as client:
        assert client.get(URL).status_code == 204
    assert closed == ["inner"]


async def test_the_async_transport_wraps_and_closes_its_inner_transport(mode: str) -> None:
    closed: list[str] = []

    class Inner(httpx.MockTransport):
        async def aclose(self) -> None:
            closed.append("inner")

    transport = AsyncRateLimitTransport(Inner(lambda r: httpx.Response(204)), ip="192.0.2.1")
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(URL)).status_code == 204
    assert closed == ["inner"]


# -- reading headers on every request --


def test_httpx_keeps_the_header_triples_the_request_path_reads() -> None:
    # The per-request header scans read httpx's private Headers._list (see
    # _engine._triples). An httpx release that changes it must fail here, not quietly
    # send every request down the slower path.
    assert _engine._HTTPX_TRIPLES


@pytest.mark.parametrize("httpx_triples", [True, False], ids=["httpx-triples", "public-raw"])
def test_the_api_key_is_read_alike_either_way(httpx_triples: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_engine, "_HTTPX_TRIPLES", httpx_triples)
    headers = httpx.Headers([("X-Authorization-Hint", "no"), ("AUTHORIZATION", "Bearer k-1"), ("Accept", "*/*")])
    assert _engine._raw_header(headers, b"authorization") == headers["authorization"].encode() == b"Bearer k-1"
    assert _engine._raw_header(httpx.Headers({"Accept": "*/*"}), b"authorization") is None
    # Per key, a bucket of its own: one request a minute each, and a third must wait.
    transport = RateLimitTransport(
        httpx.MockTransport(lambda r: httpx.Response(204)),
        rate="1/minute",
        burst=1,
        max_wait=0,
        ip="192.0.2.1",
        backend=MemoryBackend(),
    )
    with httpx.Client(transport=transport) as client:
        assert client.get(URL, headers={"Authorization": "Bearer one"}).status_code == 204
        assert client.get(URL, headers={"authorization": "Bearer two"}).status_code == 204
        with pytest.raises(MaxWaitExceeded):
            client.get(URL, headers={"Authorization": "Bearer one"})


# --- a backend that fails after the answer came ----------------------------------------


class _StoreDown(MemoryBackend):
    """Reserves as usual; storing a pause or a learned rate fails (a locked file, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: list[str] = []

    def pause(self, *args: typing.Any) -> None:
        self.failed.append("pause")
        raise BackendError("store down")

    def learn(self, *args: typing.Any) -> None:
        self.failed.append("learn")
        raise BackendError("store down")


async def test_a_backend_that_cannot_store_a_pause_does_not_fail_the_request(mode: str) -> None:
    # Found by review: the error escaped with the 429's connection still taken.
    router = respx.Router()
    router.get(URL).mock(side_effect=[httpx.Response(429, headers={"Retry-After": "2"}), httpx.Response(200)])
    events: list[Event] = []
    store = _StoreDown()
    harness = Harness(mode, router.handler, backend=store, on_event=events.append, adaptive="off")
    response = await harness.request()
    assert (response.status_code, _stats(response).attempts) == (200, 2)
    assert store.failed == ["pause"]
    assert harness.clock.sleeps == [2.0]  # the server's wait is still kept, by this caller
    assert [e.kind for e in events if e.kind == "backend_degraded"] == ["backend_degraded"]


async def test_a_backend_that_cannot_store_what_an_answer_taught_still_returns_the_answer(mode: str) -> None:
    # A 200 whose rate-limit fields teach a slower rate: the upload is done, so failing to
    # share the lesson must not make the caller send it again.
    headers = {"RateLimit-Policy": "10;w=1", "RateLimit": "limit=10, remaining=5, reset=1"}
    router = respx.Router()
    route = router.get(URL).mock(return_value=httpx.Response(200, headers=headers))
    store = _StoreDown()
    harness = Harness(mode, router.handler, backend=store)
    response = await harness.request()
    assert response.status_code == 200
    assert store.failed == ["learn"]
    assert route.call_count == 1


@pytest.mark.parametrize("mode", ["asyncio", "trio"])
async def test_a_request_cancelled_while_its_pause_is_stored_closes_the_response(mode: str) -> None:
    class SlowStore(MemoryBackend):
        async def apause(self, *args: typing.Any) -> None:
            await anyio.sleep(30)

    class Body(httpx.AsyncByteStream):
        """A streamed body (one built from bytes is read, so closed, at once)."""

        async def __aiter__(self) -> typing.AsyncIterator[bytes]:
            yield b"slow down"

    answers: list[httpx.Response] = []

    def handler(request: httpx.Request) -> httpx.Response:
        answers.append(httpx.Response(429, headers={"Retry-After": "2"}, stream=Body()))
        return answers[-1]

    harness = Harness(mode, handler, backend=SlowStore(), adaptive="off")
    with anyio.move_on_after(0.2) as scope:
        await harness.request()
    assert scope.cancelled_caught
    assert len(answers) == 1
    assert answers[0].is_closed  # else its connection would stay taken from the pool


class _Streamed(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that arrives as a stream, as from a socket (one built from bytes is read at once)."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def __iter__(self) -> typing.Iterator[bytes]:
        yield self._body

    async def __aiter__(self) -> typing.AsyncIterator[bytes]:
        yield self._body


async def test_the_error_after_the_retries_shows_what_the_server_said(mode: str) -> None:
    # The refused answers were closed unread: the error's response had no body to show.
    body = b'{"error": "down for maintenance until 10:00 UTC"}'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Content-Length": str(len(body))}, stream=_Streamed(body))

    retry = RetryPolicy(failure_attempts=2, backoff_base=0.001, backoff_max=0.001)
    harness = Harness(mode, handler, retry=retry)
    with pytest.raises(ServerError) as caught:
        await harness.request()
    assert caught.value.response is not None
    assert caught.value.response.content == body
