"""Fifteen real processes sharing one key learn the server's real limit, on SQLite and on Redis.

Each run starts the emulated API on loopback (50/second: the free tier's 50/minute, 60x
faster, counted by a sliding log and advertised with IETF ``RateLimit`` headers) and 15
uploader processes told the paid tier's rate, 200/second. Figures are counted at the
server; the floors leave room for a loaded 2-core machine.
"""

from __future__ import annotations

import pathlib

import pytest

from ratelimit_client._simulate import RunSummary, SimulationConfig, run_kind

QUOTA = 50.0
DURATION = 6.0


def _fleet(backend: str) -> RunSummary:
    config = SimulationConfig(
        workers=15,
        rate="50/second",
        client_rate="200/second",  # told paid; the server enforces free
        duration=DURATION,
        mode="sliding_log",
        backend=backend,
        headers="ietf",
    )
    return run_kind(config, "ratelimit-client")


def _check_converged(run: RunSummary) -> None:
    assert run.errors == ()
    assert run.lost == 0
    assert run.delivered == sum(run.per_worker)
    attempts = run.delivered + run.server_throttled
    assert run.server_throttled <= 0.05 * attempts, (run.server_throttled, attempts)
    # Seconds 2 up to the last whole second: the fleet uses the real quota, not less.
    steady = run.admitted_per_second[2 : int(run.wall)]
    assert len(steady) >= 3
    assert sum(steady) >= 0.85 * QUOTA * len(steady), steady
    # And it got there by learning: every worker paces at the advertised quota's safe rate
    # (49/second: one under 50), far below the 199/second it was told.
    assert run.configured_rate == pytest.approx(199.0)
    assert run.learned_min[-1] == pytest.approx(49.0, rel=0.02)
    assert max(run.learned_mean[2:]) <= QUOTA


def test_fifteen_processes_on_sqlite_converge_on_the_real_limit(tmp_path: pathlib.Path) -> None:
    _check_converged(_fleet(f"sqlite://{tmp_path / 'fleet.sqlite3'}"))


def test_fifteen_processes_on_redis_converge_on_the_real_limit(redis_url: str) -> None:
    _check_converged(_fleet(redis_url))
