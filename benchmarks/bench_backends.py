"""Acquire cost per backend, side by side with pyrate-limiter's SQLite bucket and `limits`' Redis moving window.

    python benchmarks/bench_backends.py [--rounds 9] [--n 1000] [--only redis]

pyrate-limiter runs with its defaults (no file lock: its ``use_file_lock=True`` mode
raises TypeError with the filelock release installed here). Needs the ``bench`` extra
(pyrate-limiter, limits) and a ``redis-server`` binary: a
private server is started on a free port, so command counts (INFO commandstats) are
exact and nothing else shares it. Candidates run interleaved, round by round, so machine
noise falls on all of them alike; each figure is the median over rounds of µs/acquire,
and each ratio the median of the per-round ratios.

Socket timeouts differ by default: ours has 1 s (the fallback needs it to notice a hung
server), kept by the kernel on the sync client; `limits` has none. So the Redis
candidates come in pairs with the same setting: both without a timeout, both with 1 s,
and both with 1 s kept by Python (redis-py's usual way, which polls before each call).
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import typing

import anyio
import limits
import limits.storage
import limits.strategies
import pyrate_limiter
import redis

from ratelimit_client import MemoryBackend, RedisBackend, SQLiteBackend
from ratelimit_client._gcra import Bucket

# A limit that always admits, so every library does exactly its acquire work.
BUCKET = Bucket(3600 / 1_000_000, 1000)
KEYS = ["L0:ip+key:ip=192.0.2.1|key=bench"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    server = typing.cast("str", shutil.which("redis-server"))
    args = [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", directory]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    return process, f"redis://127.0.0.1:{port}/0"


def per_acquire(run: typing.Callable[[int], None], n: int) -> float:
    start = time.perf_counter()
    run(n)
    return (time.perf_counter() - start) / n * 1e6


def commands_per_acquire(url: str, run: typing.Callable[[int], None], n: int) -> tuple[float, dict[str, int], float]:
    """Client-issued commands per acquire (commands run inside Lua scripts excluded), and
    the server's µs per EVALSHA (the script and the commands it runs)."""
    admin = redis.Redis.from_url(url)
    run(1)  # load scripts first
    admin.config_resetstat()
    run(n)
    info = admin.info("commandstats")
    admin.close()
    stats = {k.removeprefix("cmdstat_"): v["calls"] for k, v in info.items()}
    server_us = float(info.get("cmdstat_evalsha", {}).get("usec_per_call", 0.0))
    scripted = {"time", "get", "set", "del", "zadd", "zcard", "zrange", "zremrangebyscore", "expire", "pexpire",
                "lrange", "lpush", "ltrim", "llen", "lindex", "zcount", "incrby", "ttl", "pttl"}  # fmt: skip
    outer = {k: v for k, v in stats.items() if k not in scripted and k not in ("config|resetstat", "info")}
    return sum(outer.values()) / n, outer, server_us


StallMode = typing.Literal["blocking", "thread", "ours"]


def loop_stall(path: pathlib.Path, mode: StallMode, n: int) -> tuple[float, int]:
    """Longest event-loop stall (ms) while ``n`` async reserves run and another process
    keeps taking the write lock for 2 ms at a time, and how many reserves ran on the loop's
    thread. ``mode``: "blocking" calls the sync reserve on the loop (waiting for the lock
    there), "thread" hops to a worker thread every time, "ours" is ``areserve``."""
    on_loop = 0
    loop_thread = threading.get_ident()

    def clock() -> float:
        nonlocal on_loop
        on_loop += threading.get_ident() == loop_thread
        return time.time()

    backend = SQLiteBackend(path, namespace="bench", clock=clock)
    # In a process of its own, as it would be: a thread here would also contend for our GIL.
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE)
    assert writer.stdout is not None
    writer.stdout.readline()  # it has started writing

    async def main() -> float:
        worst = 0.0

        async def ticker() -> None:
            nonlocal worst
            while True:
                before = time.perf_counter()
                await asyncio.sleep(0)
                worst = max(worst, time.perf_counter() - before)

        async def reserve() -> None:
            if mode == "ours":
                await backend.areserve(KEYS, [BUCKET], max_wait=None)
            elif mode == "thread":
                await anyio.to_thread.run_sync(lambda: backend.reserve(KEYS, [BUCKET], max_wait=None))
            else:
                backend.reserve(KEYS, [BUCKET], max_wait=None)
            # As a request's I/O would: a reserve that ran on the loop does not yield.
            await asyncio.sleep(0)

        # Start-up off the clock: the worker thread, the loop's connection, anyio's imports.
        nonlocal on_loop
        await anyio.to_thread.run_sync(lambda: None)
        await reserve()
        on_loop = 0
        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        for _ in range(n):
            await reserve()
        task.cancel()
        return worst * 1000

    try:
        return asyncio.run(main()), on_loop
    finally:
        writer.terminate()
        writer.wait()
        backend.close()


_WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
print("ready", flush=True)
while True:
    conn.execute("BEGIN IMMEDIATE")
    time.sleep(0.002)
    conn.execute("COMMIT")
    time.sleep(0.001)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--n", type=int, default=1000, help="acquires per round and candidate")
    parser.add_argument("--only", choices=["redis"], help="run only these candidates (and skip the stall test)")
    options = parser.parse_args()
    n = options.n
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_redis(tmp)
        try:
            ours_sqlite = SQLiteBackend(pathlib.Path(tmp) / "ours.sqlite3", namespace="bench")
            memory = MemoryBackend()
            ours_redis = RedisBackend(url, namespace="bench")
            ours_redis_plain = RedisBackend(url, namespace="bench", socket_timeout=None)
            # Any connection_class keeps redis-py's Python-level timeout (a poll() per call).
            ours_redis_python_timeout = RedisBackend(url, namespace="bench", connection_class=redis.Connection)
            rates = [pyrate_limiter.Rate(1_000_000, pyrate_limiter.Duration.HOUR)]
            pyrate_bucket = pyrate_limiter.SQLiteBucket.init_from_file(rates, db_path=f"{tmp}/pyrate.sqlite3")
            pyrate = pyrate_limiter.Limiter(pyrate_bucket)
            limits_storage = limits.storage.RedisStorage(url)
            moving = limits.strategies.MovingWindowRateLimiter(limits_storage)
            limits_storage_timeout = limits.storage.RedisStorage(url, socket_timeout=1.0, socket_connect_timeout=1.0)
            moving_timeout = limits.strategies.MovingWindowRateLimiter(limits_storage_timeout)
            item = limits.parse("1000000/hour")

            async def ours_redis_async(count: int) -> None:
                for _ in range(count):
                    await ours_redis.areserve(KEYS, [BUCKET], max_wait=None)

            async def ours_sqlite_async(count: int) -> None:
                for _ in range(count):
                    await ours_sqlite.areserve(KEYS, [BUCKET], max_wait=None)

            async def ours_sqlite_thread(count: int) -> None:  # how areserve ran before: always a thread hop
                for _ in range(count):
                    await anyio.to_thread.run_sync(lambda: ours_sqlite.reserve(KEYS, [BUCKET], max_wait=None))

            def repeat(call: typing.Callable[[], object]) -> typing.Callable[[int], None]:
                def run(count: int) -> None:
                    for _ in range(count):
                        call()

                return run

            candidates: dict[str, typing.Callable[[int], None]] = {
                "ours memory": repeat(lambda: memory.reserve(KEYS, [BUCKET], max_wait=None)),
                "ours sqlite (sync)": repeat(lambda: ours_sqlite.reserve(KEYS, [BUCKET], max_wait=None)),
                "ours sqlite (async)": lambda count: anyio.run(ours_sqlite_async, count),
                "ours sqlite (async, always a worker thread)": lambda count: anyio.run(ours_sqlite_thread, count),
                "pyrate-limiter SQLiteBucket": repeat(lambda: pyrate.try_acquire("bench", blocking=False)),
                "ours redis (sync)": repeat(lambda: ours_redis.reserve(KEYS, [BUCKET], max_wait=None)),
                "ours redis (sync, no socket timeout)": repeat(
                    lambda: ours_redis_plain.reserve(KEYS, [BUCKET], max_wait=None)
                ),
                "ours redis (sync, Python socket timeout)": repeat(
                    lambda: ours_redis_python_timeout.reserve(KEYS, [BUCKET], max_wait=None)
                ),
                "ours redis (asyncio)": lambda count: anyio.run(ours_redis_async, count),
                "limits redis moving window": repeat(lambda: moving.hit(item, "bench", "key")),
                "limits redis moving window (1 s socket timeout)": repeat(
                    lambda: moving_timeout.hit(item, "bench", "key")
                ),
            }
            if options.only == "redis":
                candidates = {name: run for name, run in candidates.items() if "redis" in name}
            for run in candidates.values():
                run(50)  # warm up: connections, scripts, tables
            samples: dict[str, list[float]] = {name: [] for name in candidates}
            names = list(candidates)
            for round_ in range(options.rounds):
                # Each round starts one candidate further on, so none always runs first.
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    samples[name].append(per_acquire(candidates[name], n))
            medians = {name: statistics.median(values) for name, values in samples.items()}

            print(f"rounds={options.rounds} n={n} (median µs per acquire; lower is better)")
            for name, value in medians.items():
                print(f"  {name:48s} {value:9.1f}")
            print("ratios (ours / theirs; median of per-round ratios):")
            pairs = [
                ("ours sqlite (sync)", "pyrate-limiter SQLiteBucket", "defaults"),
                ("ours sqlite (async)", "ours sqlite (async, always a worker thread)", "on the loop when free"),
                ("ours redis (sync)", "limits redis moving window", "defaults: ours 1 s timeout, limits none"),
                ("ours redis (sync, no socket timeout)", "limits redis moving window", "both no timeout"),
                ("ours redis (sync)", "limits redis moving window (1 s socket timeout)", "both 1 s timeout"),
                (
                    "ours redis (sync, Python socket timeout)",
                    "limits redis moving window (1 s socket timeout)",
                    "both 1 s timeout, kept by Python",
                ),
            ]
            for ours, theirs, note in pairs:
                if ours in samples and theirs in samples:
                    ratio = statistics.median(a / b for a, b in zip(samples[ours], samples[theirs], strict=True))
                    print(f"  {ours} / {theirs}: {ratio:.2f} ({note})")
            ours_cmds, ours_detail, ours_us = commands_per_acquire(url, candidates["ours redis (sync)"], 2000)
            limits_cmds, limits_detail, limits_us = commands_per_acquire(
                url, candidates["limits redis moving window"], 2000
            )
            print(
                f"redis commands per acquire: ours {ours_cmds:g} {ours_detail}; limits {limits_cmds:g} {limits_detail}"
            )
            print(f"redis server µs per EVALSHA (INFO commandstats): ours {ours_us:.2f}; limits {limits_us:.2f}")
            ours_sqlite.close()
            ours_redis.close()
            ours_redis_plain.close()
            ours_redis_python_timeout.close()
            if options.only == "redis":
                return
            print("event-loop stall, sqlite under write contention (1000 async reserves):")
            modes: tuple[StallMode, ...] = ("blocking", "thread", "ours")
            for mode in modes:
                worst, on_loop = loop_stall(pathlib.Path(tmp) / f"stall-{mode}.sqlite3", mode, 1000)
                print(f"  {mode:8s} longest stall {worst:5.1f} ms; {on_loop} of 1000 ran on the loop")
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
