"""Shared fixtures: the anyio backends every async test runs on, loopback servers, Redis."""

from __future__ import annotations

import os
import socket
import typing

import pytest
from _servers import ServerThread


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default backend (``sqlite://``) keeps its file in the cache directory: one per test,
    so tests never share limiter state with each other or with the user's own runs."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every ``@pytest.mark.anyio`` test runs once on asyncio and once on trio."""
    return typing.cast("str", request.param)


@pytest.fixture
def serve() -> typing.Iterator[typing.Callable[[typing.Any], ServerThread]]:
    """Start an ASGI app with uvicorn on 127.0.0.1 (a free port); stopped after the test."""
    started: list[ServerThread] = []

    def start(app: typing.Any) -> ServerThread:
        server = ServerThread(app)
        server.start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def redis_url() -> str:
    """A reachable Redis URL; under CI=true a missing Redis fails the test instead of skipping it."""
    url = os.environ.get("RATELIMIT_CLIENT_TEST_REDIS", "redis://127.0.0.1:6379/0")
    host, _, port = url.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2].partition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=1).close()
    except OSError as exc:
        message = f"Redis is not reachable at {host}:{port or 6379} ({exc}); start one with scripts/ensure-redis"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url
