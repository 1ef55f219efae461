"""Fixtures that run a test three ways: the sync transport, and the async one on asyncio and trio.

A test module imports them (``from _modes import by_mode, mode_fixture``) and takes ``mode``.
"""

from __future__ import annotations

import typing

import pytest


@pytest.fixture(name="mode", params=["sync", "asyncio", "trio"])
def mode_fixture(request: pytest.FixtureRequest) -> str:
    return typing.cast("str", request.param)


@pytest.fixture(name="anyio_backend")
def by_mode(mode: str) -> str:
    # The sync transport runs on the asyncio loop too: it never awaits, its sleeps are fake.
    return "asyncio" if mode == "sync" else mode
