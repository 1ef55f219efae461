"""Fixtures: every backend in turn (the conformance suite), and a private redis-server."""

from __future__ import annotations

import os
import pathlib
import shutil
import typing

import pytest

from backends._harness import Harness, MemoryHarness, PrivateRedis, RedisHarness, SQLiteHarness


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def harness(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> typing.Iterator[Harness]:
    """Each backend in turn: memory, SQLite (a fresh file), Redis (a fresh namespace)."""
    made: Harness
    if request.param == "memory":
        made = MemoryHarness()
    elif request.param == "sqlite":
        made = SQLiteHarness(tmp_path / "limits.sqlite3")
    else:
        made = RedisHarness(request.getfixturevalue("redis_url"))
    yield made
    made.close()


@pytest.fixture
def private_redis(tmp_path: pathlib.Path, redis_url: str) -> typing.Iterator[PrivateRedis]:
    """A private redis-server (needs the redis-server binary, like the shared one)."""
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed; scripts/ensure-redis installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()
