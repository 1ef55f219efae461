"""Fixtures: a private redis-server (the backends suite's) and a delaying proxy in front of it."""

from __future__ import annotations

import typing

import pytest
from backends._harness import PrivateRedis
from backends.conftest import private_redis

from reliability._proxy import DelayProxy

__all__ = ["private_redis", "slow_redis"]


@pytest.fixture
def slow_redis(private_redis: PrivateRedis) -> typing.Iterator[DelayProxy]:
    """A :class:`DelayProxy` in front of a private redis-server; set ``.delay`` to slow it."""
    with DelayProxy(private_redis.port) as proxy:
        yield proxy
