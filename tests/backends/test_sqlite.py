"""SQLite specifics: file location, pragmas, clock steps, pruning, errors that name the file."""

from __future__ import annotations

import pathlib
import sqlite3
import threading

import anyio
import anyio.to_thread
import pytest

from backends._harness import FakeClock
from ratelimit_client import BackendError, ConfigError, RateLimitTransport, Reservation, SQLiteBackend
from ratelimit_client._backends import _sqlite, backend_from_url, check_url, default_sqlite_path
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


@pytest.mark.parametrize(
    ("url", "field"),
    [
        # inf (or a huge number) overflowed sqlite3's milliseconds: "locked" at once, no wait.
        ("sqlite:///tmp/x.db?busy_timeout=inf", "backend busy_timeout"),
        ("sqlite:///tmp/x.db?busy_timeout=1e12", "backend busy_timeout"),
        ("sqlite:///tmp/x.db?busy_timeout=nan", "backend busy_timeout"),
        ("redis://127.0.0.1/0?probe_interval=inf", "backend probe_interval"),  # never probed again
        ("sqlite:///tmp/%00x.db", "backend"),  # was a bare ValueError: embedded null byte
    ],
)
def test_out_of_range_url_options_are_config_errors(url: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_url(url)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("path", "busy_timeout"), [("x\0y.db", 5.0), ("x.db", float("inf")), ("x.db", -1), ("x.db", True)]
)
def test_bad_constructor_arguments_are_config_errors(tmp_path: pathlib.Path, path: str, busy_timeout: float) -> None:
    with pytest.raises(ConfigError):
        SQLiteBackend(str(tmp_path / path), busy_timeout=busy_timeout)


def test_the_connection_uses_wal_and_autocommit(tmp_path: pathlib.Path) -> None:
    backend = SQLiteBackend(tmp_path / "x.db")
    conn = backend._connection()
    assert conn.isolation_level is None
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    backend.close()


def test_a_clock_step_back_moves_the_queue_back_with_it(tmp_path: pathlib.Path) -> None:
    clock = FakeClock()
    backend = SQLiteBackend(tmp_path / "x.db", clock=clock)
    for _ in range(3):
        backend.reserve(["k"], [BUCKET], max_wait=None)
    # The wall clock steps back an hour (say, a reboot): the rows were written "later"
    # than now. The queue keeps its distance from the clock: the next slot is 3 s away,
    # not an hour and 3 s (a stall), nor now (a burst).
    clock.now -= 3600
    assert backend.reserve(["k"], [BUCKET], max_wait=None).wait == pytest.approx(3.0)
    clock.now -= 5
    assert backend.reserve(["k"], [BUCKET], max_wait=None).wait == pytest.approx(4.0)
    backend.close()


def test_a_queue_deeper_than_any_horizon_is_kept(tmp_path: pathlib.Path) -> None:
    """A queue (or a pause) far ahead of the clock was once taken for a clock step and
    forgotten, so the next caller went at once: twice the rate."""
    clock = FakeClock()
    backend = SQLiteBackend(tmp_path / "x.db", clock=clock)
    bucket = Bucket(10.0, 1)
    waits = [backend.reserve(["k"], [bucket], max_wait=None).wait for _ in range(200)]
    assert waits == pytest.approx([10.0 * i for i in range(200)])
    backend.pause(["k"], [bucket], 5000.0)
    assert backend.reserve(["k"], [bucket], max_wait=None).wait == pytest.approx(5000.0)
    backend.close()


def test_idle_rows_are_pruned(tmp_path: pathlib.Path) -> None:
    clock = FakeClock()
    backend = SQLiteBackend(tmp_path / "x.db", clock=clock, prune_every=60.0)
    for i in range(50):
        backend.reserve([f"k{i}"], [BUCKET], max_wait=None)
    count = "SELECT count(*) FROM ratelimit_v2"
    assert backend._connection().execute(count).fetchone()[0] == 50
    clock.now += 61
    backend.reserve(["fresh"], [BUCKET], max_wait=None)
    assert backend._connection().execute(count).fetchone()[0] == 1
    backend.close()


@pytest.mark.parametrize(
    ("tat", "holes", "expected"),
    [
        ("garbage", "", 0.0),  # no tat: a full bucket, then the key is written afresh
        (b"\x00\x01", "", 0.0),
        (1_000_010.0, "1.5", 10.0),  # holes without their pair: dropped, the tat kept
        (1_000_010.0, "x y", 10.0),
        (1_000_010.0, 7, 10.0),
    ],
)
def test_a_corrupt_row_is_reset_not_raised_on_every_request(
    tmp_path: pathlib.Path, tat: object, holes: object, expected: float
) -> None:
    clock = FakeClock()
    clock.now = 1_000_000.0
    backend = SQLiteBackend(tmp_path / "rows.db", namespace="n", clock=clock)
    backend.reserve(["k"], [Bucket(10.0, 1)], max_wait=None)  # the row exists
    backend._connection().execute("UPDATE ratelimit_v2 SET tat = ?, holes = ?", (tat, holes))
    first = backend.reserve(["k"], [Bucket(10.0, 1)], max_wait=None)
    assert first.wait == expected
    assert backend.reserve(["k"], [Bucket(10.0, 1)], max_wait=None).wait == expected + 10.0  # written afresh
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
async def test_async_calls_run_on_the_loop_when_the_file_is_free(tmp_path: pathlib.Path) -> None:
    seen: list[int] = []

    def clock() -> float:
        seen.append(threading.get_ident())
        return 1000.0

    backend = SQLiteBackend(tmp_path / "x.db", clock=clock)
    reservation = await backend.areserve(["k"], [BUCKET], max_wait=None)
    await backend.apause(["k"], [BUCKET], 1.0)
    await backend.acancel(reservation)
    await backend.alearn("k", "v", 60.0)
    assert await backend.apeek("k") == "v"
    assert seen == [threading.get_ident()] * 5  # each on the loop's thread
    await backend.aclose()


@pytest.mark.anyio
async def test_a_file_locked_by_another_process_is_waited_for_in_a_worker_thread(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.db"
    seen: list[int] = []

    def clock() -> float:
        seen.append(threading.get_ident())
        return 1000.0

    backend = SQLiteBackend(path, clock=clock, busy_timeout=30.0)
    other = sqlite3.connect(path, isolation_level=None)  # as another process would hold it
    other.execute("BEGIN IMMEDIATE")
    got: list[Reservation] = []

    async def reserve() -> None:
        got.append(await backend.areserve(["k"], [BUCKET], max_wait=None))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(reserve)
        for _ in range(5):  # the loop runs on while the reservation waits for the file
            await anyio.sleep(0.01)
        assert not got
        other.execute("ROLLBACK")
    assert got[0].granted
    assert len(seen) == 1  # it went once the file was free,
    assert seen[0] != threading.get_ident()  # in a worker thread
    other.close()
    await backend.aclose()


@pytest.mark.anyio
async def test_the_loop_does_not_wait_for_another_thread_inside_a_transaction(tmp_path: pathlib.Path) -> None:
    inside, release = threading.Event(), threading.Event()
    released: list[bool] = []

    def clock() -> float:
        if threading.current_thread().name == "holder":
            inside.set()
            released.append(release.wait(30))  # False: the loop was blocked and never released it
        return 1000.0

    backend = SQLiteBackend(tmp_path / "x.db", clock=clock)
    holder = threading.Thread(target=backend.reserve, args=(["a"], [BUCKET]), kwargs={"max_wait": None}, name="holder")
    holder.start()
    await anyio.to_thread.run_sync(inside.wait)
    got: list[Reservation] = []

    async def reserve() -> None:
        got.append(await backend.areserve(["b"], [BUCKET], max_wait=None))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(reserve)
        await anyio.sleep(0.05)
        assert not got  # queued behind the holder, in a worker thread
        release.set()
    await anyio.to_thread.run_sync(holder.join)
    assert released == [True]
    assert got[0].granted
    await backend.aclose()


@pytest.mark.anyio
async def test_the_wal_stays_bounded_when_every_operation_is_async(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loop's connection never checkpoints; every THREAD_EVERY-th operation goes
    # through the worker thread's, which does (SQLite's default: at 1000 pages).
    page = 4096
    bound = (1000 + 2 * _sqlite.THREAD_EVERY) * page

    async def wal_after(path: pathlib.Path, operations: int) -> int:
        backend = SQLiteBackend(path, clock=lambda: 1000.0)
        for _ in range(operations):
            await backend.areserve(["k"], [Bucket(1e-9, 1)], max_wait=None)
        size = path.with_name(path.name + "-wal").stat().st_size
        await backend.aclose()
        return size

    assert await wal_after(tmp_path / "a.db", 4000) <= bound
    monkeypatch.setattr(_sqlite, "THREAD_EVERY", 10**9)  # every operation on the loop
    assert await wal_after(tmp_path / "b.db", 4000) > bound  # the bound means something


def test_busy_means_the_file_is_locked_and_nothing_else(tmp_path: pathlib.Path) -> None:
    def error(conn: sqlite3.Connection, sql: str) -> sqlite3.Error:
        with pytest.raises(sqlite3.Error) as caught:
            conn.execute(sql)
        return caught.value

    path = tmp_path / "x.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(path, isolation_level=None, timeout=0)
    assert _sqlite._is_busy(error(waiter, "BEGIN IMMEDIATE"))
    assert not _sqlite._is_busy(error(waiter, "SELECT * FROM no_such_table"))
    assert not _sqlite._is_busy(OSError("locked"))
    holder.execute("ROLLBACK")
    holder.close()
    waiter.close()
