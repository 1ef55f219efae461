"""SQLite specifics: file location, pragmas, clock steps, pruning, errors that name the file."""

from __future__ import annotations

import pathlib
import sqlite3

import pytest

from backends._harness import FakeClock
from ratelimit_client import BackendError, ConfigError, RateLimitTransport, SQLiteBackend
from ratelimit_client._backends import backend_from_url, check_url, default_sqlite_path
from ratelimit_client._gcra import Bucket

BUCKET = Bucket(1.0, 1)


def test_the_default_file_is_in_the_user_cache_dir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_sqlite_path() == tmp_path / "cache" / "ratelimit-client" / "limits.sqlite3"
    transport = RateLimitTransport()  # the transport's default backend is sqlite://
    backend = transport._shared.backend
    assert isinstance(backend, SQLiteBackend)
    assert backend.path == default_sqlite_path()
    assert backend.path.exists()
    transport.close()


def test_urls_name_the_file_and_bad_ones_list_the_schemes(tmp_path: pathlib.Path) -> None:
    backend = backend_from_url(f"sqlite://{tmp_path}/x.db?busy_timeout=0.5", namespace="n")
    assert isinstance(backend, SQLiteBackend)
    assert (backend.path, backend.busy_timeout, backend.namespace) == (tmp_path / "x.db", 0.5, "n")
    backend.close()
    with pytest.raises(ConfigError, match=r"memory://, sqlite://, redis://, rediss://, unix://"):
        check_url("postgres://db/limits")
    with pytest.raises(ConfigError, match="absolute"):
        check_url("sqlite://relative/x.db")
    with pytest.raises(ConfigError, match="busy_timeout"):
        check_url("sqlite:///x.db?busy_timeout=soon")


def test_the_connection_uses_wal_and_autocommit(tmp_path: pathlib.Path) -> None:
    backend = SQLiteBackend(tmp_path / "x.db")
    conn = backend._connection()
    assert conn.isolation_level is None
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    backend.close()


def test_a_time_far_ahead_is_a_clock_step_and_is_forgotten(tmp_path: pathlib.Path) -> None:
    clock = FakeClock()
    backend = SQLiteBackend(tmp_path / "x.db", clock=clock)
    for _ in range(3):
        backend.reserve(["k"], [BUCKET], max_wait=None)
    # The wall clock steps back an hour (say, a reboot): the stored queue is now an hour
    # and some ahead. Waiting for it would stall every process; it is reset instead.
    clock.now -= 3600
    assert backend.reserve(["k"], [BUCKET], max_wait=None).wait == 0.0
    # A small step back (inside the horizon) is simply waited out.
    clock.now -= 5
    assert backend.reserve(["k"], [BUCKET], max_wait=None).wait == pytest.approx(6.0)
    backend.close()


def test_idle_rows_are_pruned(tmp_path: pathlib.Path) -> None:
    clock = FakeClock()
    backend = SQLiteBackend(tmp_path / "x.db", clock=clock, prune_every=60.0)
    for i in range(50):
        backend.reserve([f"k{i}"], [BUCKET], max_wait=None)
    count = "SELECT count(*) FROM ratelimit_v1"
    assert backend._connection().execute(count).fetchone()[0] == 50
    clock.now += 61
    backend.reserve(["fresh"], [BUCKET], max_wait=None)
    assert backend._connection().execute(count).fetchone()[0] == 1
    backend.close()


def test_a_corrupt_file_is_named_in_the_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(BackendError, match="not a database") as caught:
        SQLiteBackend(path)
    assert str(path) in str(caught.value)


def test_an_unopenable_path_is_named_in_the_error(tmp_path: pathlib.Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(BackendError) as caught:
        SQLiteBackend(tmp_path / "dir.db")
    assert str(tmp_path / "dir.db") in str(caught.value)


def test_a_read_only_database_is_named_in_the_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ro.db"
    backend = SQLiteBackend(path)
    backend.close()
    # Permission bits do not stop root, so make SQLite itself refuse writes.
    backend = SQLiteBackend(path)
    backend._connection().execute("PRAGMA query_only = ON")
    with pytest.raises(BackendError, match=r"readonly|read-only|query_only") as caught:
        backend.reserve(["k"], [BUCKET], max_wait=None)
    assert str(path) in str(caught.value)
    backend.close()


def test_a_locked_file_is_waited_for_then_named_in_the_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "locked.db"
    backend = SQLiteBackend(path, busy_timeout=0.1)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(BackendError, match="locked") as caught:
        backend.reserve(["k"], [BUCKET], max_wait=None)
    assert str(path) in str(caught.value)
    other.execute("ROLLBACK")
    other.close()
    # Once released, the same backend carries on (its transaction was rolled back).
    assert backend.reserve(["k"], [BUCKET], max_wait=None).wait == 0.0
    backend.close()


@pytest.mark.anyio
async def test_async_calls_run_off_the_event_loop(tmp_path: pathlib.Path) -> None:
    import threading  # noqa: PLC0415

    seen: list[int] = []

    def clock() -> float:
        seen.append(threading.get_ident())
        return 1000.0

    backend = SQLiteBackend(tmp_path / "x.db", clock=clock)
    await backend.areserve(["k"], [BUCKET], max_wait=None)
    assert seen
    assert seen[0] != threading.get_ident()  # a worker thread, not the loop's
    await backend.aclose()
