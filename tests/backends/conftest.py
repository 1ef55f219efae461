"""Fixtures: every backend in turn (the conformance suite), and a private redis-server."""

from __future__ import annotations

import os
import pathlib
import shutil
import typing

import pytest

from backends._harness import (
    Harness,
    MemoryHarness,
    PrivateCluster,
    PrivateRedis,
    RedisClusterHarness,
    RedisHarness,
    SQLiteHarness,
)


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis),
    ]
)
def harness(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> typing.Iterator[Harness]:
    """Each backend in turn: memory, SQLite (a fresh file), Redis and a Redis Cluster (a
    fresh namespace each)."""
    made: Harness
    if request.param == "memory":
        made = MemoryHarness()
    elif request.param == "sqlite":
        made = SQLiteHarness(tmp_path / "limits.sqlite3")
    elif request.param == "redis":
        made = RedisHarness(request.getfixturevalue("redis_url"))
    else:
        made = RedisClusterHarness(request.getfixturevalue("redis_cluster").url)
    yield made
    made.close()


def _need_redis_server() -> None:
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed; scripts/ensure-redis installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> typing.Iterator[PrivateCluster]:
    """A private three-node Redis Cluster, shared by the session's tests (each uses its own namespace)."""
    _need_redis_server()
    cluster = PrivateCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def private_redis(tmp_path: pathlib.Path, redis_url: str) -> typing.Iterator[PrivateRedis]:
    """A private redis-server (needs the redis-server binary, like the shared one)."""
    _need_redis_server()
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.close()
