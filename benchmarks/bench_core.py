"""Core benchmarks (issue 2): what the limiter and the transport cost when nothing waits.

1. One uncontended limiter acquire (``MemoryBackend.areserve``/``reserve`` under a
   generous rate) against aiolimiter's ``AsyncLimiter.acquire()`` (generous rate) and a
   bare ``time.monotonic()`` call as the floor, like for like: with the limit's storage
   keys in hand against one ``AsyncLimiter`` in hand, and with the keys derived from
   (IP, API key) (``Limiter.keys_for``, one cached look-up) against the (IP, key)'s
   ``AsyncLimiter`` looked up in a dict, as a user of aiolimiter limiting per key would;
   also the least an acquire with our guarantees can cost (``_DesignFloor``), so the gap
   to aiolimiter can be told apart from what the design itself costs, and the same
   without the two guarantees aiolimiter does not give (``_BareStep``: thread safety and
   capacity given back by a cancelled waiter), so their price is measured too.
2. The same without a network (``httpx.MockTransport`` inside both clients): the
   transport's own cost per request, in microseconds, free of the network's noise.
3. The per-request cost of ``AsyncRateLimitTransport`` and ``RateLimitTransport``
   (generous limit: no request waits) against bare httpx, on a uvicorn server on
   127.0.0.1 in another process, with keep-alive and the same client set-up.

The machine is noisy, so every variant runs in every round, in a shuffled order, and the
report gives medians over rounds and the median of the per-round ratios (the variants
compared with each other run back to back in each round, under the same noise; in the
transport part they take turns of 25 requests, so a burst of load from other jobs lands
on both). The transport part also reports the client's CPU time per request, which other
jobs' load barely moves: our layer's cost is CPU in the client, so this is its steadiest
measure::

    python benchmarks/bench_core.py                   # the figures in RESULTS.md
    python benchmarks/bench_core.py --rounds 5 --requests 300 --acquires 20000  # quick
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import typing
from pathlib import Path

import aiolimiter
import anyio
import anyio.to_thread
import httpx

import ratelimit_client
from ratelimit_client import AsyncRateLimitTransport, MemoryBackend, Rate, RateLimitTransport
from ratelimit_client._limiter import Limit, Limiter

# Performs ``n`` operations. A runner that works in another thread returns the (wall,
# CPU) seconds it measured there; one that returns None is timed by the caller.
Runner = typing.Callable[[int], typing.Awaitable[tuple[float, float] | None]]
API_KEY = "bench-secret-key"
AUTH = {"authorization": f"Bearer {API_KEY}"}
# Far more than any loop here can ask for: no acquire ever waits.
GENEROUS = Rate(1_000_000_000, 1)
GENEROUS_BURST = 1_000_000


@dataclasses.dataclass
class Variant:
    name: str
    run: Runner
    samples: list[float] = dataclasses.field(default_factory=list)  # wall seconds per operation, per round
    cpu: list[float] = dataclasses.field(default_factory=list)  # client CPU seconds per operation, per round


async def _timed(run: Runner, n: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    measured = await run(n)
    return measured or (time.perf_counter() - wall, time.process_time() - cpu)


async def interleave(groups: list[list[Variant]], *, rounds: int, n: int, seed: int, block: int | None = None) -> None:
    """Run every variant ``n`` times per round. The variants of a group (the ones whose
    ratios are reported) take turns in blocks of ``block`` operations (all ``n`` at once
    when None), so a burst of noise from other jobs hits them alike; the order of groups,
    and of the variants in each turn, is shuffled afresh each time."""
    order = random.Random(seed)
    step = block or n
    for group in groups:  # warm-up: connections, caches, the local-IP lookup
        for variant in group:
            await variant.run(max(1, n // 10))
    for _ in range(rounds):
        for group in order.sample(groups, len(groups)):
            gc.collect()
            totals = {id(variant): [0.0, 0.0] for variant in group}
            for done in range(0, n, step):
                for variant in order.sample(group, len(group)):
                    wall, cpu = await _timed(variant.run, min(step, n - done))
                    totals[id(variant)][0] += wall
                    totals[id(variant)][1] += cpu
            for variant in group:
                wall, cpu = totals[id(variant)]
                variant.samples.append(wall / n)
                variant.cpu.append(cpu / n)


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.3f}" if seconds < 1e-5 else f"{seconds * 1e6:.1f}"


def _ratios(a: Variant, b: Variant) -> list[float]:
    return [x / y for x, y in zip(a.samples, b.samples, strict=True)]


def table(variants: list[Variant], reference: Variant, peers: dict[str, Variant] | None = None) -> list[str]:
    """Medians per variant and the ratio to ``reference``; with ``peers``, also each
    variant's ratio to its like-for-like peer (by variant name)."""
    head = f"| variant | median µs/op | min-max µs/op | ratio to {reference.name} (median of per-round ratios) |"
    lines = [
        head + (" ratio to its like-for-like peer |" if peers else ""),
        "|---|---:|---:|---:|" + ("---:|" if peers else ""),
    ]
    for v in variants:
        ratio = statistics.median(_ratios(v, reference))
        spread = f"{_us(min(v.samples))}-{_us(max(v.samples))}"
        line = f"| {v.name} | {_us(statistics.median(v.samples))} | {spread} | {ratio:.3f} |"
        if peers:
            peer = peers.get(v.name)
            line += f" {statistics.median(_ratios(v, peer)):.3f} |" if peer else " |"
        lines.append(line)
    return lines


def cpu_table(pairs: list[tuple[Variant, Variant]]) -> list[str]:
    """Client CPU per request (this process, all threads: the server is another process),
    which other jobs' load barely moves, against the bare request's wall time."""
    lines = [
        "| variant | client CPU µs/request, bare | ours | extra µs | extra / bare wall time |",
        "|---|---:|---:|---:|---:|",
    ]
    for ours, bare in pairs:
        extra = statistics.median([x - y for x, y in zip(ours.cpu, bare.cpu, strict=True)])
        wall = statistics.median(bare.samples)
        lines.append(
            f"| {ours.name} | {_us(statistics.median(bare.cpu))} | {_us(statistics.median(ours.cpu))} "
            f"| {extra * 1e6:+.1f} | {100 * extra / wall:+.1f} % |"
        )
    return lines


def overhead(ours: Variant, bare: Variant) -> str:
    ratios = _ratios(ours, bare)
    extra = [x - y for x, y in zip(ours.samples, bare.samples, strict=True)]
    return (
        f"{ours.name}: overhead {100 * (statistics.median(ratios) - 1):+.1f} % "
        f"(per-round ratios {min(ratios):.3f}-{max(ratios):.3f}), "
        f"{statistics.median(extra) * 1e6:+.1f} µs per request"
    )


# -- 1. limiter acquire -------------------------------------------------------------------


class _DesignFloor:
    """The least an acquire with our guarantees can cost here, as a measuring stick (not
    the library's code): thread-safe (a lock), one GCRA step on a dict entry, a record a
    cancel could give back, awaited as a coroutine. No keys, no checks, no options."""

    __slots__ = ("_interval", "_lead", "_lock", "_tats")

    def __init__(self, interval: float, lead: float) -> None:
        self._interval, self._lead = interval, lead
        self._lock = threading.Lock()
        self._tats: dict[str, float] = {}

    def reserve(self, key: str) -> _Record:
        self._lock.acquire()
        try:
            now = time.monotonic()
            before = self._tats.get(key, now)
            slot = (before if before > now else now) - self._lead
            if slot < now:
                slot = now
            tat = self._tats[key] = (before if before > slot else slot) + self._interval
        finally:
            self._lock.release()
        return _Record(slot - now, (tat, before))

    async def areserve(self, key: str) -> _Record:
        return self.reserve(key)


class _Record:
    __slots__ = ("charge", "wait")

    def __init__(self, wait: float, charge: tuple[float, float]) -> None:
        self.wait, self.charge = wait, charge


class _BareStep:
    """``_DesignFloor`` with only aiolimiter's guarantees, to price the two it lacks: no
    lock (one thread, as an ``AsyncLimiter`` is bound to one event loop) and no record (a
    cancelled waiter gives nothing back), so the wait is all it returns."""

    __slots__ = ("_interval", "_lead", "_tats")

    def __init__(self, interval: float, lead: float) -> None:
        self._interval, self._lead = interval, lead
        self._tats: dict[str, float] = {}

    def reserve(self, key: str) -> float:
        now = time.monotonic()
        before = self._tats.get(key, now)
        slot = (before if before > now else now) - self._lead
        if slot < now:
            slot = now
        self._tats[key] = (before if before > slot else slot) + self._interval
        return slot - now

    async def areserve(self, key: str) -> float:
        return self.reserve(key)


async def bench_acquire(args: argparse.Namespace) -> list[str]:
    limiter = Limiter([Limit(GENEROUS, burst=GENEROUS_BURST)], namespace="bench")
    buckets = limiter.buckets
    backend = MemoryBackend()
    sync_backend = MemoryBackend()
    bucket = aiolimiter.AsyncLimiter(GENEROUS.requests, GENEROUS.per_seconds)
    clock = time.monotonic
    ip = "127.0.0.1"
    waited: list[float] = []

    async def floor(n: int) -> None:
        for _ in range(n):
            clock()

    async def aiolimiter_acquire(n: int) -> None:
        for _ in range(n):
            await bucket.acquire()

    # A user of aiolimiter limiting per (IP, API key) keeps one AsyncLimiter per pair:
    # the same cached look-up as Limiter.keys_for, so the keyed rows compare like for like.
    limiters: dict[tuple[str, str | None], aiolimiter.AsyncLimiter] = {}

    def limiter_for(ip: str, api_key: str | None) -> aiolimiter.AsyncLimiter:
        found = limiters.get((ip, api_key))
        if found is None:
            found = limiters[ip, api_key] = aiolimiter.AsyncLimiter(GENEROUS.requests, GENEROUS.per_seconds)
        return found

    async def aiolimiter_keyed(n: int) -> None:
        for _ in range(n):
            await limiter_for(ip, API_KEY).acquire()

    async def ours_async(n: int) -> None:
        for _ in range(n):
            reservation = await backend.areserve(limiter.keys_for(ip, API_KEY), buckets, max_wait=None)
            if reservation.wait > 0:
                waited.append(reservation.wait)

    async def ours_sync(n: int) -> None:
        for _ in range(n):
            reservation = sync_backend.reserve(limiter.keys_for(ip, API_KEY), buckets, max_wait=None)
            if reservation.wait > 0:
                waited.append(reservation.wait)

    keys = limiter.keys_for(ip, API_KEY)

    async def ours_async_keys_in_hand(n: int) -> None:
        for _ in range(n):
            reservation = await backend.areserve(keys, buckets, max_wait=None)
            if reservation.wait > 0:
                waited.append(reservation.wait)

    async def ours_sync_keys_in_hand(n: int) -> None:
        for _ in range(n):
            reservation = sync_backend.reserve(keys, buckets, max_wait=None)
            if reservation.wait > 0:
                waited.append(reservation.wait)

    design_floor = _DesignFloor(buckets[0].interval, buckets[0].lead)

    async def floor_async(n: int) -> None:
        for _ in range(n):
            await design_floor.areserve("key")

    bare_step = _BareStep(buckets[0].interval, buckets[0].lead)

    async def bare_step_async(n: int) -> None:
        for _ in range(n):
            await bare_step.areserve("key")

    reference = Variant("aiolimiter AsyncLimiter.acquire()", aiolimiter_acquire)
    keyed = Variant("aiolimiter: the (IP, key)'s AsyncLimiter from a dict, acquire()", aiolimiter_keyed)
    in_hand = [
        Variant("ours: MemoryBackend.areserve, keys in hand", ours_async_keys_in_hand),
        Variant("ours: MemoryBackend.reserve (sync), keys in hand", ours_sync_keys_in_hand),
    ]
    derived = [
        Variant("ours: keys + MemoryBackend.areserve", ours_async),
        Variant("ours: keys + MemoryBackend.reserve (sync)", ours_sync),
    ]
    variants = [
        Variant("time.monotonic() floor", floor),
        reference,
        keyed,
        *in_hand,
        *derived,
        Variant("design floor: lock + GCRA step + give-back record, async", floor_async),
        Variant("the floor without lock and record (aiolimiter's guarantees), async", bare_step_async),
    ]
    await interleave([variants], rounds=args.rounds, n=args.acquires, seed=args.seed)
    if waited:
        raise RuntimeError(f"{len(waited)} acquires waited: the rate is not generous enough")
    peers = {v.name: reference for v in in_hand} | {v.name: keyed for v in derived}
    return [
        f"Acquire, {args.acquires} per variant per round, {args.rounds} rounds (asyncio):",
        "",
        *table(variants, reference, peers),
    ]


# -- 2. transport per-request cost -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int) -> subprocess.Popen[bytes]:
    server = Path(__file__).with_name("bench_core_server.py")
    process = subprocess.Popen([sys.executable, str(server), str(port)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the benchmark server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)
        else:
            return process
    process.kill()
    raise RuntimeError("the benchmark server did not start within 20 s")


def _options(backend: str = "memory://") -> dict[str, typing.Any]:
    # Everything else is the default a user gets: default retry policy, the API key from
    # the Authorization header, the local IP found (once) by the transport.
    return {"rate": GENEROUS, "burst": GENEROUS_BURST, "backend": backend}


def _ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"ok")


async def bench_in_process(args: argparse.Namespace) -> list[str]:
    """The transport's own cost, without a network: both sides wrap httpx.MockTransport."""
    url = "http://127.0.0.1:8000/"
    sync_bare = httpx.Client(transport=httpx.MockTransport(_ok), headers=AUTH)
    sync_ours = httpx.Client(transport=RateLimitTransport(httpx.MockTransport(_ok), **_options()), headers=AUTH)
    async_bare = httpx.AsyncClient(transport=httpx.MockTransport(_ok), headers=AUTH)
    async_ours = httpx.AsyncClient(
        transport=AsyncRateLimitTransport(httpx.MockTransport(_ok), **_options()), headers=AUTH
    )

    def run_async(client: httpx.AsyncClient) -> Runner:
        async def run(n: int) -> None:
            for _ in range(n):
                await client.get(url)

        return run

    def run_sync(client: httpx.Client) -> Runner:
        def block(n: int) -> None:
            for _ in range(n):
                client.get(url)

        async def run(n: int) -> None:
            await anyio.to_thread.run_sync(block, n)

        return run

    a_bare = Variant("httpx.AsyncClient(MockTransport)", run_async(async_bare))
    a_ours = Variant("httpx.AsyncClient(AsyncRateLimitTransport(MockTransport))", run_async(async_ours))
    s_bare = Variant("httpx.Client(MockTransport)", run_sync(sync_bare))
    s_ours = Variant("httpx.Client(RateLimitTransport(MockTransport))", run_sync(sync_ours))
    n = args.requests * 4
    await interleave([[a_bare, a_ours], [s_bare, s_ours]], rounds=args.rounds, n=n, seed=args.seed)
    return [
        f"In process, no network (httpx.MockTransport inside), {n} requests per variant per round, "
        f"{args.rounds} rounds (asyncio):",
        "",
        *table([a_bare, a_ours, s_bare, s_ours], a_bare),
        "",
        f"- {overhead(a_ours, a_bare)}",
        f"- {overhead(s_ours, s_bare)}",
    ]


async def bench_transport(args: argparse.Namespace, url: str) -> list[str]:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    sync_bare = httpx.Client(transport=httpx.HTTPTransport(limits=limits), headers=AUTH)
    sync_transport = RateLimitTransport(httpx.HTTPTransport(limits=limits), **_options())
    async_transport = AsyncRateLimitTransport(httpx.AsyncHTTPTransport(limits=limits), **_options())
    sqlite_transport = AsyncRateLimitTransport(
        httpx.AsyncHTTPTransport(limits=limits), **_options(f"sqlite://{args.sqlite_file}")
    )
    sync_ours = httpx.Client(transport=sync_transport, headers=AUTH)
    async with (
        httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(limits=limits), headers=AUTH) as async_bare,
        httpx.AsyncClient(transport=async_transport, headers=AUTH) as async_ours,
        httpx.AsyncClient(transport=sqlite_transport, headers=AUTH) as async_sqlite,
    ):

        def run_async(client: httpx.AsyncClient) -> Runner:
            async def run(n: int) -> None:
                for _ in range(n):
                    (await client.get(url)).raise_for_status()

            return run

        def run_sync(client: httpx.Client) -> Runner:
            def block(n: int) -> tuple[float, float]:
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(n):
                    client.get(url).raise_for_status()
                return time.perf_counter() - wall, time.process_time() - cpu

            async def run(n: int) -> tuple[float, float]:
                # In a worker thread, timed there: the hop to it is not the request's cost.
                return await anyio.to_thread.run_sync(block, n)

            return run

        a_bare = Variant("httpx.AsyncClient, bare", run_async(async_bare))
        a_ours = Variant("httpx.AsyncClient + AsyncRateLimitTransport", run_async(async_ours))
        s_bare = Variant("httpx.Client, bare", run_sync(sync_bare))
        s_ours = Variant("httpx.Client + RateLimitTransport", run_sync(sync_ours))
        a_sqlite = Variant("httpx.AsyncClient + AsyncRateLimitTransport, SQLite backend", run_async(async_sqlite))
        variants = [a_bare, a_ours, s_bare, s_ours, a_sqlite]
        try:
            groups = [[a_bare, a_ours, a_sqlite], [s_bare, s_ours]]
            await interleave(groups, rounds=args.rounds, n=args.requests, seed=args.seed, block=args.block)
        finally:
            await anyio.to_thread.run_sync(sync_bare.close)
            await anyio.to_thread.run_sync(sync_ours.close)
        for transport in (sync_transport, async_transport, sqlite_transport):
            stats = transport.statistics()
            if stats.slot_waits or stats.retries:
                raise RuntimeError(f"the transport waited or retried: {stats}")
    return [
        f"Transport, GET {url} (keep-alive, 1 connection), {args.requests} requests per variant "
        f"per round in turns of {args.block}, {args.rounds} rounds ({args.backend}):",
        "",
        *table(variants, a_bare),
        "",
        f"- {overhead(a_ours, a_bare)}",
        f"- {overhead(s_ours, s_bare)}",
        f"- {overhead(a_sqlite, a_bare)} (informational: the cross-process default, not the target)",
        "",
        "Client CPU per request (process time of the client, medians over rounds):",
        "",
        *cpu_table([(a_ours, a_bare), (s_ours, s_bare), (a_sqlite, a_bare)]),
    ]


def machine() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?")
    except OSError:
        model = platform.processor() or "?"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.python_implementation()} {platform.python_version()}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs ({model}), load average {load}; httpx {httpx.__version__}, "
        f"aiolimiter {aiolimiter.__version__}, ratelimit-client {ratelimit_client.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--acquires", type=int, default=50_000, help="acquires per variant per round")
    parser.add_argument("--requests", type=int, default=500, help="HTTP requests per variant per round")
    parser.add_argument("--block", type=int, default=25, help="HTTP requests per turn (variants take turns)")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio", help="for the transport part")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--skip", choices=("acquire", "in-process", "transport"), action="append", default=[])
    args = parser.parse_args()

    scratch = tempfile.mkdtemp(prefix="bench_core_")
    args.sqlite_file = Path(scratch) / "limits.db"
    try:
        print(f"Machine: {machine()}\n")
        if "acquire" not in args.skip:
            # aiolimiter is asyncio-only, so the acquire part always runs on asyncio.
            print("\n".join(anyio.run(bench_acquire, args, backend="asyncio")), "\n", flush=True)
        if "in-process" not in args.skip:
            print("\n".join(anyio.run(bench_in_process, args, backend="asyncio")), "\n", flush=True)
        if "transport" not in args.skip:
            port = free_port()
            server = start_server(port)
            try:
                lines = anyio.run(bench_transport, args, f"http://127.0.0.1:{port}/", backend=args.backend)
            finally:
                server.terminate()
                server.wait(10)
            print("\n".join(lines))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
