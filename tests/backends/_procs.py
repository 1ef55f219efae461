"""Worker processes for the multi-process tests, started from a forkserver (see ``fleet``).

Each worker reports ``"ready"`` on ``out`` once set up, waits for ``go``, does its work
and reports its result on ``out``.
"""

from __future__ import annotations

import functools
import multiprocessing.connection
import multiprocessing.synchronize
import os
import sqlite3
import time
import typing

import anyio
import anyio.to_thread
import httpx

from ratelimit_client import RateLimitTransport, SQLiteBackend
from ratelimit_client._gcra import Bucket, KeyState, reserve

# A bucket that admits BURST at once, then one an hour: every immediate admission counts.
BURST = 20
BUCKET = Bucket(3600.0, BURST)

Queue = typing.Any  # multiprocessing's queue type is not public


class Stamping(httpx.BaseTransport):
    """Stamps each request with the wall-clock time it leaves the limiter (comparable
    across processes), so a test can check the limiter apart from delivery jitter."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["x-sent"] = repr(time.time())
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def transport(backend: str, namespace: str, server: str, seconds: float, go: Event, out: Queue) -> None:
    """Send requests as fast as the shared limit allows, for ``seconds``."""
    limited = RateLimitTransport(
        Stamping(),
        rate="20/second",
        burst=1,
        server_counting="token_bucket",
        backend=backend,
        namespace=namespace,
        api_key="fleet-key",
        ip="127.0.0.1",
    )
    with httpx.Client(transport=limited) as client:
        out.put("ready")
        go.wait()
        deadline = time.monotonic() + seconds
        sent = 0
        while time.monotonic() < deadline:
            client.post(server, content=b"x")
            sent += 1
    out.put(sent)


def ours(path: str, go: Event, out: Queue) -> None:
    """Take as many immediate slots as the bucket gives, through SQLiteBackend."""
    backend = SQLiteBackend(path, namespace="race")
    out.put("ready")
    go.wait()
    out.put(sum(backend.reserve(["k"], [BUCKET], max_wait=0).granted for _ in range(BURST)))


def ours_async(path: str, go: Event, out: Queue) -> None:
    """The same through areserve (on the event loop when the file is free, in a worker
    thread when another process holds it), each racing a sync reserve of its own process
    from a thread; every slot taken counts."""
    backend = SQLiteBackend(path, namespace="race")
    sync_reserve = functools.partial(backend.reserve, ["k"], [BUCKET], max_wait=0)

    async def take() -> int:
        granted: list[bool] = []

        async def from_thread() -> None:
            granted.append((await anyio.to_thread.run_sync(sync_reserve)).granted)

        for _ in range(BURST // 2):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(from_thread)
                granted.append((await backend.areserve(["k"], [BUCKET], max_wait=0)).granted)
        return sum(granted)

    out.put("ready")
    go.wait()
    out.put(anyio.run(take))


def naive(path: str, go: Event, out: Queue) -> None:
    """The same with Python's default transaction mode: the SELECT runs outside the
    transaction (it only begins before the INSERT), so two processes read the same state."""
    conn = sqlite3.connect(path, timeout=10)
    out.put("ready")
    go.wait()
    taken = 0
    for _ in range(BURST):
        row = conn.execute("SELECT tat FROM naive WHERE key = 'k'").fetchone()
        decision = reserve([KeyState(row[0]) if row else None], [BUCKET], time.time(), max_wait=0)
        if decision.states is not None:
            conn.execute(
                "INSERT INTO naive (key, tat) VALUES ('k', ?) ON CONFLICT (key) DO UPDATE SET tat = excluded.tat",
                (decision.states[0].tat,),
            )
            taken += 1
        conn.commit()
    out.put(taken)


def forked(path: str, results: multiprocessing.connection.Connection) -> None:
    """Reserve through one SQLiteBackend, fork, close it in the parent, and reserve
    through the same object in the child and then in the parent again, sync and async.

    Sends (granted before the fork, by the child, by the parent while the child still
    runs, by the parent once more, by the parent on another key, the file's integrity
    check). Runs in a fresh single-threaded process: forking one with threads is unsafe,
    and a multiprocessing queue starts a thread, so the two talk through pipes."""
    backend = SQLiteBackend(path, namespace="fork")

    def take(rounds: int, key: str = "k") -> int:
        async def both() -> int:
            granted = 0
            for _ in range(rounds):
                granted += backend.reserve([key], [BUCKET], max_wait=0).granted
                granted += (await backend.areserve([key], [BUCKET], max_wait=0)).granted
            return granted

        return anyio.run(both)

    before = take(3)  # both connections open: the sync one and the event loop's
    to_child, from_parent = os.pipe()
    to_parent, from_child = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's coverage is not collected
        code = 1
        try:
            # Only the parent may hold the other ends: if it dies, these reads see EOF.
            os.close(from_parent)
            os.close(to_parent)
            os.read(to_child, 1)  # the parent has closed its connections
            os.write(from_child, b"%d" % take(5))
            os.read(to_child, 1)  # the parent is done
            backend.close()
            code = 0
        finally:
            os._exit(code)
    # The last connection to close checkpoints and deletes the WAL: a child still
    # writing through copies of the parent's connections would write to a deleted file.
    backend.close()
    os.close(to_child)
    os.close(from_child)
    os.write(from_parent, b"g")
    by_child = int(os.read(to_parent, 16) or b"-1")
    meanwhile, after, other = take(2), take(1), take(1, key="other")
    os.write(from_parent, b"f")
    _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        by_child = -1
    backend.close()
    with sqlite3.connect(path) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    results.send((before, by_child, meanwhile, after, other, integrity))


def hold(path: str, go: Event, out: Queue) -> None:
    """Start a reservation and stop inside its transaction, until killed."""

    def stuck_clock() -> float:
        # Called once BEGIN IMMEDIATE holds the write lock.
        out.put("in transaction")
        time.sleep(3600)
        return time.time()

    backend = SQLiteBackend(path, namespace="kill", clock=stuck_clock)
    out.put("ready")
    go.wait()
    backend.reserve(["k"], [Bucket(1.0, 1)], max_wait=None)
    out.put(os.getpid())  # never reached


Event = multiprocessing.synchronize.Event
