"""An API key never shows: not in logs (any logger, DEBUG), events, errors, reprs or storage.

Requests go over a real loopback socket through httpx's own client, so httpx's and
httpcore's logging is exercised too (httpx logs full URLs; our filter masks them).
"""

from __future__ import annotations

import base64
import logging
import os
import pathlib
import socket
import typing

import httpx
import pytest
from _modes import by_mode, mode_fixture  # noqa: F401 - fixtures: `mode` and `anyio_backend`
from _servers import Receive, Scope, Send, ServerThread

from ratelimit_client import (
    AsyncRateLimitTransport,
    BackendError,
    ConfigError,
    Event,
    MemoryBackend,
    RateLimitTransport,
    RedisBackend,
    RequestFailed,
    RetryPolicy,
    load_settings,
)
from ratelimit_client._cli import main
from ratelimit_client._events import RedactingFilter, describe, redact_text
from ratelimit_client._gcra import Bucket
from ratelimit_client._simulate import RunSummary

pytestmark = pytest.mark.anyio

SECRET = "wandbkey0123456789SECRETabcdef"
FORMS = ["bearer", "basic", "query", "userinfo", "explicit"]
POLICY = RetryPolicy(backoff_base=0.001, backoff_max=0.002, throttle_attempts=2, failure_attempts=2)


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    """/ok answers 200; /throttled 429 with a short Retry-After; /broken 503."""
    while (await receive()).get("more_body"):
        pass
    status, headers = {"/throttled": (429, [(b"retry-after", b"0.01")]), "/broken": (503, [])}.get(
        scope["path"], (200, [])
    )
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: connecting is refused


def _request_args(form: str, base: str) -> tuple[str, dict[str, typing.Any], dict[str, typing.Any]]:
    """(base URL, request kwargs, transport options) carrying the secret in ``form``."""
    if form == "bearer":
        return base, {"headers": {"Authorization": f"Bearer {SECRET}"}}, {}
    if form == "basic":
        return base, {"auth": ("api", SECRET)}, {}  # how the W&B client sends it
    if form == "query":
        return base, {"params": {"api_key": SECRET, "page": "2"}}, {}
    if form == "userinfo":
        return base.replace("http://", f"http://api:{SECRET}@"), {}, {}
    return base, {}, {"api_key": SECRET}


def _leaks(text: str) -> bool:
    encoded = base64.b64encode(f"api:{SECRET}".encode()).decode()
    return SECRET in text or encoded in text or SECRET[:16] in text


@pytest.fixture(scope="module")
def server() -> typing.Iterator[ServerThread]:
    running = ServerThread(_app)
    running.start()
    yield running
    running.stop()


def _paths(base: str, dead: str) -> list[str]:
    # Each failure path: fine, throttled to give-up, 503 to give-up, connection refused.
    return [f"{base}/ok", f"{base}/throttled", f"{base}/broken", f"{dead}/ok"]


def _run_sync(
    transports: list[RateLimitTransport], urls: list[str], kwargs: dict[str, typing.Any]
) -> list[RequestFailed]:
    errors: list[RequestFailed] = []
    with httpx.Client(transport=transports[0]) as client, httpx.Client(transport=transports[1]) as on_disk:
        for url in urls:
            try:
                client.get(url, **kwargs)
            except RequestFailed as exc:
                errors.append(exc)
        on_disk.post(urls[0], content=b"x" * 10, **kwargs)
    return errors


async def _run_async(
    transports: list[AsyncRateLimitTransport], urls: list[str], kwargs: dict[str, typing.Any]
) -> list[RequestFailed]:
    errors: list[RequestFailed] = []
    async with (
        httpx.AsyncClient(transport=transports[0]) as client,
        httpx.AsyncClient(transport=transports[1]) as on_disk,
    ):
        for url in urls:
            try:
                await client.get(url, **kwargs)
            except RequestFailed as exc:
                errors.append(exc)
        await on_disk.post(urls[0], content=b"x" * 10, **kwargs)
    return errors


def _files_under(directory: str) -> list[bytes]:
    return [p.read_bytes() for p in pathlib.Path(directory).rglob("*") if p.is_file()]


@pytest.mark.parametrize("form", FORMS)
async def test_the_key_appears_nowhere(
    mode: str, form: str, server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: every library's records
    events: list[Event] = []
    backend = MemoryBackend()
    base, kwargs, options = _request_args(form, server.url)
    urls = _paths(base, base.replace(str(server.port), str(_dead_port())))
    common: dict[str, typing.Any] = {"rate": "1000/second", "burst": 100, "retry": POLICY, "on_event": events.append}
    # One transport on a memory backend, one on the default backend (SQLite, on disk).
    transports: list[typing.Any]
    if mode == "sync":
        transports = [RateLimitTransport(backend=backend, **common, **options), RateLimitTransport(**common, **options)]
        errors = _run_sync(transports, urls, kwargs)
    else:
        transports = [
            AsyncRateLimitTransport(backend=backend, **common, **options),
            AsyncRateLimitTransport(**common, **options),
        ]
        errors = await _run_async(transports, urls, kwargs)

    assert [type(e).__name__ for e in errors] == ["RateLimited", "ServerError", "NetworkFailure"]
    assert {e.kind for e in events} >= {"throttled", "network_failure", "gave_up"}

    records = caplog.records
    assert any(r.name == "httpx" for r in records), "httpx's own request log was captured"
    assert any(r.name == "ratelimit_client" for r in records)
    for record in records:
        assert not _leaks(record.getMessage()), record.getMessage()
    assert not _leaks(caplog.text)
    if form == "query":
        assert any("api_key=***" in r.getMessage() for r in records if r.name == "httpx")

    for event in events:
        assert not _leaks(repr(event))
    for error in errors:
        assert not _leaks(str(error))
        assert not _leaks(repr(error))

    for transport in transports:
        assert not _leaks(repr(transport))
        assert not _leaks(repr(transport.settings))
        assert not _leaks(repr(transport.statistics()))
    assert not _leaks(repr(backend))
    stored = list(backend._tats)
    assert stored
    assert not any(_leaks(key) for key in stored)
    # The default backend's files on disk hold no trace of the key either.
    files = _files_under(os.environ["XDG_CACHE_HOME"])
    assert files
    for data in files:
        assert SECRET.encode() not in data
        assert SECRET[:16].encode() not in data


def test_the_httpx_log_filter_masks_query_values_and_user_info() -> None:
    record = logging.LogRecord(
        "httpx",
        logging.INFO,
        __file__,
        1,
        'HTTP Request: %s %s "%s %d %s"',
        ("GET", httpx.URL(f"https://api:{SECRET}@api.test/files?api_key={SECRET}&page=2"), "HTTP/1.1", 200, "OK"),
        None,
    )
    assert RedactingFilter().filter(record)
    assert record.getMessage() == 'HTTP Request: GET https://api.test/files?api_key=***&page=*** "HTTP/1.1 200 OK"'
    text = logging.LogRecord("httpx", logging.INFO, __file__, 1, f"see https://x.test/?token={SECRET}", None, None)
    RedactingFilter().filter(text)
    assert text.getMessage() == "see https://x.test/?token=***"


def test_the_transports_install_the_filter_once() -> None:
    RateLimitTransport(backend=MemoryBackend())
    AsyncRateLimitTransport(backend=MemoryBackend())
    RateLimitTransport(backend=MemoryBackend())
    filters = [f for f in logging.getLogger("httpx").filters if isinstance(f, RedactingFilter)]
    assert len(filters) == 1


# Credentials in configuration: a Redis password in the backend URL, a key in a config file.

PASSWORD = "s3cretPASSWORDvalue"


def _no_password(text: str) -> bool:
    return PASSWORD not in text and PASSWORD[:8] not in text


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RATELIMIT_CLIENT_"):
            monkeypatch.delenv(name)


def test_the_settings_repr_hides_the_redis_password() -> None:
    settings = load_settings(backend=f"redis://:{PASSWORD}@localhost:6379/0?fallback=fail", environ={})
    assert settings.backend == f"redis://:{PASSWORD}@localhost:6379/0?fallback=fail"  # still usable
    assert _no_password(repr(settings))
    assert "backend='redis://localhost:6379/0?fallback=fail'" in repr(settings)


@pytest.mark.parametrize("as_json", [False, True])
def test_the_config_command_hides_the_redis_password(
    as_json: bool, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_environment(monkeypatch)
    monkeypatch.setenv("RATELIMIT_CLIENT_BACKEND", f"redis://:{PASSWORD}@localhost:6379/0?password={PASSWORD}")
    assert main(["config", *(["--json"] if as_json else [])]) == 0
    out = capsys.readouterr().out
    assert _no_password(out), out
    assert "redis://localhost:6379/0?password=***" in out


def _summary(config: typing.Any, progress: object) -> list[RunSummary]:
    """A stand-in for run_simulation: one run on the configured backend, no processes."""
    return [
        RunSummary(
            kind="ratelimit-client", mode="gcra", workers=1, quota="50/1s", client_rate="50/1s",
            backend=config.effective_backend, identities=1, delivered=1, lost=0, throttled=0,
            server_throttled=0, failure_episodes=0, utilisation=None, jain=1.0, p50=0.01, p99=0.01,
            wall=1.0, per_worker=(1,),
        )
    ]  # fmt: skip


@pytest.mark.parametrize("as_json", [False, True])
def test_the_simulate_command_hides_the_redis_password(
    as_json: bool, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_environment(monkeypatch)
    monkeypatch.setattr("ratelimit_client._simulate.run_simulation", _summary)
    backend = f"redis://user:{PASSWORD}@localhost:6379/0"
    assert main(["simulate", "--workers", "1", "--backend", backend, *(["--json"] if as_json else [])]) == 0
    captured = capsys.readouterr()
    assert _no_password(captured.out + captured.err), captured
    assert "redis://localhost:6379/0" in captured.err  # the progress line still names it


BAD_BACKENDS = [
    f"redi://:{PASSWORD}@localhost:6379/0",  # a misspelt scheme
    f"unix://:{PASSWORD}@/run/redis.sock?cluster=true",
    f"sqlite://:{PASSWORD}@host/limits.db",
    f"unix:///run/redis.sock?password={PASSWORD}&cluster=true",
    f"redis://:{PASSWORD}@host:abc/0",  # a port that is no number
    f"redis://:{PASSWORD}@host:99999/0",
    f"redis://:{PASSWORD}@[::1/0",  # an unclosed IPv6 address
    f"redi://:p@ss{PASSWORD}@localhost/0",  # an unencoded @ in the password
]


@pytest.mark.parametrize("url", BAD_BACKENDS)
def test_an_invalid_backend_url_is_refused_without_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(backend=url, environ={})
    assert caught.value.field.startswith("backend")
    assert _no_password(str(caught.value)), caught.value
    assert _no_password(repr(caught.value.value))
    with pytest.raises(ConfigError) as from_environment:
        load_settings(environ={"RATELIMIT_CLIENT_BACKEND": url})
    assert "(environment RATELIMIT_CLIENT_BACKEND)" in from_environment.value.field
    assert _no_password(str(from_environment.value))


def test_a_redis_password_in_the_query_string_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"redis://127.0.0.1:1/0?password={PASSWORD}"  # nothing listens on port 1
    backend = RedisBackend(url, namespace="n")
    assert _no_password(repr(backend))
    with pytest.raises(BackendError) as caught:
        backend.reserve(["k"], [Bucket(1.0, 1)], max_wait=None)
    assert _no_password(str(caught.value))
    assert "?password=***" in str(caught.value)
    backend.close()
    events: list[Event] = []
    api = httpx.MockTransport(lambda request: httpx.Response(200))
    transport = RateLimitTransport(api, backend=url, api_key="k", on_event=events.append)
    assert _no_password(repr(transport))
    with httpx.Client(transport=transport) as client:
        assert client.get("https://api.test/").status_code == 200
    assert [e.kind for e in events] == ["backend_degraded"]
    assert _no_password(repr(events))
    assert _no_password(caplog.text)


def test_an_api_key_under_an_unknown_name_is_not_echoed(tmp_path: pathlib.Path) -> None:
    errors: list[ConfigError] = []
    for body in (f'api_key = "{SECRET}"\n', f'[retry]\napi_key = "{SECRET}"\n'):
        path = tmp_path / "ratelimit.toml"
        path.write_text(body)
        with pytest.raises(ConfigError, match=r"api_key") as from_file:
            load_settings(config_file=path, environ={})
        errors.append(from_file.value)
    with pytest.raises(ConfigError, match=r"apikey") as from_argument:
        load_settings(apikey=SECRET, environ={})
    errors.append(from_argument.value)
    with pytest.raises(ConfigError, match=r"apikey.*expected one of .*api_key") as from_option:
        RateLimitTransport(backend=MemoryBackend(), apikey=SECRET)  # type: ignore[call-arg]
    errors.append(from_option.value)
    for error in errors:
        assert not _leaks(str(error)), error
        assert not _leaks(repr(error.value))


REDACTED_URLS = [
    ("https://api.test/x?s3cretTOKEN", "https://api.test/x?***"),
    ("https://api.test/x?page=2&s3cretTOKEN", "https://api.test/x?page=***&***"),
    ("https://api.test/x?x;s3cretTOKEN", "https://api.test/x?***;***"),
    ("https://api.test/x?=s3cretTOKEN", "https://api.test/x?***"),
    ("https://api.test/x#access_token=s3cretTOKEN", "https://api.test/x#***"),
    ("https://api.test/x?a=1#s3cretTOKEN", "https://api.test/x?a=***#***"),
]


@pytest.mark.parametrize(("url", "shown"), REDACTED_URLS)
def test_every_query_item_and_the_fragment_are_masked(url: str, shown: str) -> None:
    assert describe(httpx.Request("GET", url)) == f"GET {shown}"
    assert redact_text(f"HTTP Request: GET {url} done") == f"HTTP Request: GET {shown} done"


def test_free_text_loses_the_whole_user_info_and_bare_query_tokens() -> None:
    assert redact_text("redis://user:p@sss3cretTOKEN@host/0") == "redis://host/0"
    assert redact_text("see https://h/x?s3cretTOKEN and https://h/#access_token=s3cretTOKEN") == (
        "see https://h/x?*** and https://h/#***"
    )
    assert redact_text("GET /x?s3cretTOKEN HTTP/1.1") == "GET /x?*** HTTP/1.1"


def test_a_bare_query_token_appears_nowhere(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    events: list[Event] = []
    api = httpx.MockTransport(lambda request: httpx.Response(429, headers={"Retry-After": "0"}))
    transport = RateLimitTransport(
        api, backend=MemoryBackend(), rate="1000/second", burst=10, retry=POLICY, on_event=events.append
    )
    with httpx.Client(transport=transport) as client, pytest.raises(RequestFailed) as caught:
        client.get(f"https://api.test/x?{SECRET}#{SECRET}")
    assert events
    assert not _leaks(str(caught.value))
    assert not _leaks(repr(events))
    assert not _leaks(caplog.text)
