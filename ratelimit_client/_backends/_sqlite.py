"""SQLite backend: one bucket per key shared by every process on the host, through a file.

Each operation is one short write transaction (``BEGIN IMMEDIATE … COMMIT``) on an
autocommit connection, running the pure GCRA step of :mod:`.._gcra` between the read and
the write. Python's default transaction mode would run the read *outside* the
transaction, letting several processes read the same state and each admit a request.

An async operation runs on the event loop when it can go at once (a transaction takes
~20 µs, a hop to a worker thread several times that), on a connection of its own that
never waits for the file's lock and never checkpoints; when the file or the backend is
busy, it runs in a worker thread, which may wait up to ``busy_timeout``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import sqlite3
import threading
import time
import typing

import anyio.to_thread

from .. import _gcra
from .._exceptions import BackendError, ConfigError
from ._base import Reservation, spend
from ._to_end import run_to_end

if typing.TYPE_CHECKING:
    from .._gcra import Bucket

__all__ = ["SQLiteBackend", "default_sqlite_path"]

MAX_BUSY_TIMEOUT = 86_400.0  # a day: longer is no wait for a lock but a hang

# v2: with the clock reading each row was written at (see _gcra), which v1 lacked; a v1
# table left in the file is not read.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS ratelimit_v2 (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    tat REAL NOT NULL,
    holes TEXT NOT NULL DEFAULT '',
    stamp REAL NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID
"""
_SELECT = "SELECT tat, holes, stamp FROM ratelimit_v2 WHERE namespace = ? AND key = ?"
_UPSERT = (
    "INSERT INTO ratelimit_v2 (namespace, key, tat, holes, stamp) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (namespace, key) DO UPDATE SET tat = excluded.tat, holes = excluded.holes, stamp = excluded.stamp"
)
# A tat at or before now is a full bucket, the same as no row (unless the clock stepped
# back since: then the row is kept, to be moved back by the step when next read).
_PRUNE = "DELETE FROM ratelimit_v2 WHERE namespace = ? AND tat < ? AND stamp <= ?"
# What learn() stored, beside the buckets: opaque text until ``expires`` (the same clock).
_LEARNED_SCHEMA = """
CREATE TABLE IF NOT EXISTS ratelimit_learned_v1 (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID
"""
_SELECT_LEARNED = "SELECT value FROM ratelimit_learned_v1 WHERE namespace = ? AND key = ? AND expires > ?"
_UPSERT_LEARNED = (
    "INSERT INTO ratelimit_learned_v1 (namespace, key, value, expires) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expires = excluded.expires"
)
_PRUNE_LEARNED = "DELETE FROM ratelimit_learned_v1 WHERE namespace = ? AND expires <= ?"

# One async operation in this many runs in the worker thread even when the loop could run
# it: the thread's connection checkpoints the WAL, which the loop's never does (a
# checkpoint fsyncs the file: milliseconds the event loop must not spend). So the WAL
# stays bounded when every operation of every process is async.
THREAD_EVERY = 64

T = typing.TypeVar("T")


class _Busy(Exception):
    """An attempt that must not wait found the file's or the backend's lock taken."""


def default_sqlite_path() -> pathlib.Path:
    """``limits.sqlite3`` in the user's cache directory (``$XDG_CACHE_HOME`` on Linux)."""
    import platformdirs  # noqa: PLC0415 - only needed when no path is given

    return pathlib.Path(platformdirs.user_cache_dir("ratelimit-client", appauthor=False)) / "limits.sqlite3"


class SQLiteBackend:
    """Limiter state in a SQLite file, shared by every process that opens it.

    Time is the host's wall clock (the one clock all processes share); when it steps back,
    the stored times move back with it (see :mod:`.._gcra`), neither waited for nor forgotten.
    Rows whose time has passed are pruned every ``prune_every`` seconds. Async calls run
    on the event loop when the file is free (without yielding), and wait for a busy file
    in a worker thread, up to ``busy_timeout``::

        backend = SQLiteBackend("/tmp/limits.sqlite3", namespace="uploads")
    """

    __slots__ = (
        "_async_ops", "_clock", "_conns", "_file", "_last_prune", "_lock", "_pid",
        "busy_timeout", "namespace", "path", "prune_every",
    )  # fmt: skip

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        namespace: str = "ratelimit-client",
        busy_timeout: float = 5.0,
        prune_every: float = 60.0,
        clock: typing.Callable[[], float] = time.time,
    ) -> None:
        self.path = pathlib.Path(path) if path is not None else default_sqlite_path()
        if "\0" in str(self.path):
            raise ConfigError("path", str(self.path), "a file path (without a NUL character)")
        # sqlite3 keeps the timeout in milliseconds in a C int: ~24 days at most.
        if isinstance(busy_timeout, bool) or not (
            isinstance(busy_timeout, (int, float)) and 0 <= busy_timeout <= MAX_BUSY_TIMEOUT
        ):
            raise ConfigError("busy_timeout", busy_timeout, f"a number of seconds from 0 to {MAX_BUSY_TIMEOUT:g}")
        self.namespace = namespace
        self.busy_timeout = busy_timeout
        self.prune_every = prune_every
        self._clock = clock
        self._lock = threading.Lock()
        # By whether it waits for the file's lock: the worker threads' and sync callers'
        # (True), the event loop's (False).
        self._conns: dict[bool, sqlite3.Connection] = {}
        self._pid = 0
        self._file: tuple[int, int] | None = None  # (device, inode) of the file the connections have open
        self._last_prune = -float("inf")
        self._async_ops = 0
        with self._lock:
            self._connection()  # fail at construction on a bad file, not at the first request

    def __repr__(self) -> str:
        return f"<SQLiteBackend path={str(self.path)!r} namespace={self.namespace!r}>"

    def reserve(
        self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], *, max_wait: float | None
    ) -> Reservation:
        return self._reserve(keys, buckets, max_wait, wait=True)

    def _reserve(
        self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], max_wait: float | None, *, wait: bool
    ) -> Reservation:
        with self._transaction(wait=wait) as (conn, now):
            decision = _gcra.reserve([self._read(conn, k) for k in keys], buckets, now, max_wait=max_wait)
            if decision.states is None:
                return Reservation(decision.wait, granted=False)
            self._write(conn, zip(keys, decision.states, strict=True))
            if now - self._last_prune >= self.prune_every:
                self._last_prune = now
                conn.execute(_PRUNE, (self.namespace, now, now))
                conn.execute(_PRUNE_LEARNED, (self.namespace, now))
            # Read in the same transaction: the learned rate costs no extra round trip.
            row = conn.execute(_SELECT_LEARNED, (self.namespace, keys[0], now)).fetchone()
        return Reservation(decision.wait, True, tuple(keys), decision.charges, learned=None if row is None else row[0])

    def cancel(self, reservation: Reservation) -> None:
        taken = spend(reservation)
        if taken is not None:
            self._give_back(*taken, wait=True)

    def _give_back(self, keys: tuple[str, ...], charges: tuple[tuple[float, float], ...], *, wait: bool) -> None:
        with self._transaction(wait=wait) as (conn, now):
            states = []
            for key, charge in zip(keys, charges, strict=True):
                state = _gcra.cancel(self._read(conn, key), charge, now)
                if state is not None:
                    states.append((key, state))
            self._write(conn, states)

    def pause(self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], seconds: float) -> None:
        self._pause(keys, buckets, seconds, wait=True)

    def _pause(
        self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], seconds: float, *, wait: bool
    ) -> None:
        with self._transaction(wait=wait) as (conn, now):
            self._write(
                conn,
                [
                    (key, _gcra.pause(self._read(conn, key), bucket, now + seconds, now))
                    for key, bucket in zip(keys, buckets, strict=True)
                ],
            )

    def learn(self, key: str, value: str, ttl: float) -> None:
        self._learn(key, value, ttl, wait=True)

    def _learn(self, key: str, value: str, ttl: float, *, wait: bool) -> None:
        with self._transaction(wait=wait) as (conn, now):
            conn.execute(_UPSERT_LEARNED, (self.namespace, key, value, now + ttl))

    def peek(self, key: str) -> str | None:
        return self._peek(key, wait=True)

    def _peek(self, key: str, *, wait: bool) -> str | None:
        # One SELECT in autocommit: a WAL reader, never waiting for the write lock.
        if not self._lock.acquire(blocking=wait):
            raise _Busy
        try:
            conn = self._connection(wait=wait)
            row = conn.execute(_SELECT_LEARNED, (self.namespace, key, self._clock())).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc, wait=wait) from exc
        finally:
            self._lock.release()
        return None if row is None else typing.cast("str", row[0])

    def close(self) -> None:
        with self._lock:
            self._drop()

    async def areserve(
        self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], *, max_wait: float | None
    ) -> Reservation:
        return await self._run(functools.partial(self._reserve, keys, buckets, max_wait), self.acancel)

    async def acancel(self, reservation: Reservation) -> None:
        taken = spend(reservation)
        if taken is not None:
            await self._run(functools.partial(self._give_back, *taken))

    async def apause(self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], seconds: float) -> None:
        await self._run(functools.partial(self._pause, keys, buckets, seconds))

    async def alearn(self, key: str, value: str, ttl: float) -> None:
        await self._run(functools.partial(self._learn, key, value, ttl))

    async def apeek(self, key: str) -> str | None:
        return await self._run(functools.partial(self._peek, key))

    async def aclose(self) -> None:
        self.close()

    async def _run(
        self, operation: typing.Callable[..., T], abandoned: typing.Callable[[T], typing.Awaitable[None]] | None = None
    ) -> T:
        """``operation(wait=False)`` on the event loop if it can go at once, else
        ``operation(wait=True)`` in a worker thread; if the caller is cancelled while the
        thread works, its result goes to ``abandoned``."""
        # A count shared by loops in several threads may lose an increment: harmless, it
        # only spaces out the checkpointing turns.
        self._async_ops += 1
        if self._async_ops % THREAD_EVERY:
            try:
                return operation(wait=False)
            except _Busy:
                pass  # nothing was written: the transaction rolled back, or never began
        # The thread's transaction commits whatever happens to the caller: see run_to_end.
        return await run_to_end(anyio.to_thread.run_sync(functools.partial(operation, wait=True)), abandoned)

    def _connection(self, *, wait: bool = True) -> sqlite3.Connection:
        # A connection must not cross a fork: the child opens its own (copies of the
        # parent's would go on writing to a WAL that the parent's last close deletes).
        # Nor outlive its file: a file deleted or replaced under us would split the fleet
        # (processes started since use the new file), so follow the path to whatever
        # file is there now.
        pid, file = os.getpid(), _identity(self.path)
        if self._pid != pid or self._file != file:
            # In a child, the parent's connections are closed before it opens its own, so
            # closing them releases no lock of the child's (POSIX locks are per process:
            # none of the parent's are affected). Dropping them would close them anyway.
            self._drop()
        conn = self._conns.get(wait)
        if conn is None:
            conn = self._conns[wait] = self._open(wait=wait)
            self._pid, self._file = pid, _identity(self.path)
        return conn

    def _open(self, *, wait: bool) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit, so BEGIN IMMEDIATE below is the only
            # transaction and the read happens inside it. The busy timeout is connect()'s
            # ``timeout``: a locked file is waited for, then reported; the loop's
            # connection does not wait at all.
            timeout = self.busy_timeout if wait else 0.0
            conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc, wait=wait) from exc
        try:
            # WAL: readers never block the writer; NORMAL: durable enough for a rate limit
            # (a power cut may lose the last reservations, never corrupt the file).
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            if not wait:
                conn.execute("PRAGMA wal_autocheckpoint = 0")  # see THREAD_EVERY
            conn.execute(_SCHEMA)
            conn.execute(_LEARNED_SCHEMA)
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(exc, wait=wait) from exc
        return conn

    def _drop(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    @contextlib.contextmanager
    def _transaction(self, *, wait: bool) -> typing.Iterator[tuple[sqlite3.Connection, float]]:
        # Another thread of this process inside a transaction: a call that must not wait
        # (the event loop's) goes to a worker thread instead.
        if not self._lock.acquire(blocking=wait):
            raise _Busy
        try:
            conn = self._connection(wait=wait)
            try:
                conn.execute("BEGIN IMMEDIATE")
                # The clock is read once the write lock is held, so stored times only grow
                # in the order the transactions commit.
                yield conn, self._clock()
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise self._error(exc, wait=wait) from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            self._lock.release()

    def _read(self, conn: sqlite3.Connection, key: str) -> _gcra.KeyState | None:
        row = conn.execute(_SELECT, (self.namespace, key)).fetchone()
        if row is None:
            return None
        tat, holes, stamp = row
        # A row written by something else (the columns take any text) is read as well as it
        # can be, and overwritten by this transaction, rather than failing every request
        # of the key: a tat that is no number is no state; holes that make no sense are
        # dropped (they only ever give capacity back).
        try:
            at, written = float(tat), float(stamp)
        except (ValueError, TypeError):
            return None
        try:
            return _gcra.KeyState(at, _decode_holes(holes), written)
        except (ValueError, TypeError, AttributeError):
            return _gcra.KeyState(at, (), written)

    def _write(self, conn: sqlite3.Connection, states: typing.Iterable[tuple[str, _gcra.KeyState]]) -> None:
        rows = [(self.namespace, key, state.tat, _encode_holes(state.holes), state.stamp) for key, state in states]
        conn.executemany(_UPSERT, rows)

    def _error(self, exc: BaseException, *, wait: bool = True) -> BackendError | _Busy:
        if not wait and _is_busy(exc):
            return _Busy()
        return BackendError(f"SQLite backend {str(self.path)!r}: {exc}")


def _is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "the file is locked" (SQLITE_BUSY or SQLITE_LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (5, 6)  # the primary code: SQLITE_BUSY, SQLITE_LOCKED
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def _encode_holes(holes: tuple[tuple[float, float], ...]) -> str:
    # repr() round-trips a float exactly: cancel() compares stored times for equality.
    return " ".join(f"{written!r} {before!r}" for written, before in holes)


def _decode_holes(text: str) -> tuple[tuple[float, float], ...]:
    if not text:  # no holes: nearly every row, on every request
        return ()
    numbers = [float(part) for part in text.split()]
    return tuple(zip(numbers[::2], numbers[1::2], strict=True))


def _identity(path: pathlib.Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino
