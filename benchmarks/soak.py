"""The soak run (issue 6): 15 uploader processes for a few compressed minutes, faults on.

The emulated server (loopback, in this process) answers a share of uploads 503, drops a
share of connections without answering, adds latency, and goes down for a few seconds at
scheduled times. The workers are the simulation's uploaders (the library's async transport
on its default backend, SQLite, one API key, an ``Idempotency-Key`` per upload so failures
are replayed). This process samples each worker's RSS (``/proc/<pid>/status`` VmRSS) and
open file descriptors (``/proc/<pid>/fd``) and counts deliveries per interval::

    python benchmarks/soak.py                     # the figures in RESULTS.md (~4 min)
    python benchmarks/soak.py --duration 30 --interval 10 --outage 12:2   # quick

Prints Markdown tables: per worker (RSS at start, after warm-up, at the end, and the
largest sample; fds at start and end; delivered, 429s, lost, failure episodes) and
deliveries per interval. "Lost" is an upload that ended in an error or a wrong answer.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import queue
import statistics
import sys
import tempfile
import time
import typing
import uuid

from ratelimit_client._simulate._run import _context, _entry
from ratelimit_client._simulate._workers import DONE, EPISODES, LOST, SLOTS, THROTTLED, WorkerResult, WorkerSpec
from ratelimit_client.server import Faults, ServerConfig, background_server

READY_TIMEOUT = 120.0


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def open_fds(pid: int) -> int:
    """Open file descriptors of ``pid`` (-1 once it has exited)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


@dataclasses.dataclass(slots=True)
class Track:
    """What the sampler saw of one worker process."""

    pid: int
    rss: list[tuple[float, int]] = dataclasses.field(default_factory=list)  # (seconds since go, KiB)
    fds: list[tuple[float, int]] = dataclasses.field(default_factory=list)

    def sample(self, at: float) -> None:
        rss, fds = rss_kib(self.pid), open_fds(self.pid)
        if rss:
            self.rss.append((at, rss))
        if fds >= 0:
            self.fds.append((at, fds))

    def rss_at(self, at: float) -> int:
        """The first RSS sample taken at or after ``at`` seconds."""
        return next((kib for t, kib in self.rss if t >= at), self.rss[-1][1])


def parse_outage(text: str) -> tuple[float, float]:
    at, seconds = text.split(":")
    return float(at), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=15)
    parser.add_argument("--rate", default="50/second", help="the server's quota, told to the clients too")
    parser.add_argument("--duration", type=float, default=240.0, help="seconds of uploading")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds per throughput interval")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS/fd samples")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the 'warm' RSS sample")
    parser.add_argument("--error-rate", type=float, default=0.05, help="share answered 503")
    parser.add_argument("--drop-rate", type=float, default=0.02, help="share whose connection is dropped")
    parser.add_argument("--latency", type=float, default=0.005, help="seconds added to every answer")
    parser.add_argument("--outage", type=parse_outage, action="append", help="AT:SECONDS after go (repeatable)")
    parser.add_argument("--body-size", type=int, default=1024)
    args = parser.parse_args()
    outages: list[tuple[float, float]] = args.outage or [(95.0, 5.0), (185.0, 5.0)]
    faults = Faults(latency=args.latency, error_rate=args.error_rate, drop_rate=args.drop_rate, seed=6)
    config = ServerConfig(tiers={"soak": args.rate}, default_tier="soak", retry_after="fractional", faults=faults)
    load_before = os.getloadavg()
    context = _context()
    namespace = f"soak-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="ratelimit-soak-") as scratch, background_server(config) as server:
        array = context.Array("d", args.workers * SLOTS, lock=False)
        go = context.Event()
        results: typing.Any = context.Queue()
        processes = []
        for index in range(args.workers):
            spec = WorkerSpec(
                index=index,
                kind="ratelimit-client",
                url=server.url,
                api_key="soak-key",
                source_ip=None,
                rate=args.rate,
                backend=None,  # the default: SQLite
                duration=args.duration,
                body_size=args.body_size,
                namespace=namespace,
                shared_path=os.path.join(scratch, "unused.sqlite"),
            )
            process = context.Process(target=_entry, args=(spec, array, go, results), daemon=True)
            process.start()
            processes.append(process)
        collected: list[WorkerResult] = []
        ready = 0
        deadline = time.monotonic() + READY_TIMEOUT
        while ready < args.workers:
            message, value = results.get(timeout=max(0.1, deadline - time.monotonic()))
            ready += 1
            if message == "result":
                collected.append(value)
        tracks = [Track(p.pid) for p in processes]
        server_rss = [(0.0, rss_kib(os.getpid()))]
        for track in tracks:
            track.sample(0.0)
        began = time.monotonic()
        for at, seconds in outages:
            server.outages.schedule(at, seconds)
        go.set()
        done_at: list[tuple[float, float]] = [(0.0, 0.0)]  # (seconds since go, deliveries so far)
        # Samples every --sample seconds, the last one a second before the deadline: the
        # workers are still uploading then (afterwards they close their clients and exit).
        end_sample = max(0.0, args.duration - 1.0)
        points = [p * args.sample for p in range(1, int(end_sample / args.sample) + 1) if p * args.sample < end_sample]
        points.append(end_sample)
        while len(collected) < args.workers:
            try:
                message, value = results.get(timeout=0.25)
                if message == "result":
                    collected.append(value)
            except queue.Empty:
                if not any(p.is_alive() for p in processes):
                    break
            now = time.monotonic() - began
            if now <= args.duration + 0.5:
                done_at.append((now, sum(array[i * SLOTS + DONE] for i in range(args.workers))))
            if points and now >= points[0]:
                points.pop(0)
                for track in tracks:
                    track.sample(now)
                server_rss.append((now, rss_kib(os.getpid())))
        wall = time.monotonic() - began
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
        counts = list(array)
        totals = dict(server.stats.totals)
    load_after = os.getloadavg()
    report(args, outages, tracks, counts, collected, done_at, server_rss, totals, wall, load_before, load_after)


def report(
    args: argparse.Namespace,
    outages: list[tuple[float, float]],
    tracks: list[Track],
    counts: list[float],
    collected: list[WorkerResult],
    done_at: list[tuple[float, float]],
    server_rss: list[tuple[float, int]],
    totals: dict[str, int],
    wall: float,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    print(
        f"Machine: CPython {platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} / {load_after[1]:.2f} after (1 / 5 min)"
    )
    print(
        f"Run: {args.workers} workers, quota {args.rate}, {args.duration:.0f} s of uploading ({wall:.1f} s wall), "
        f"faults: {args.error_rate:.0%} 503, {args.drop_rate:.0%} dropped, {args.latency * 1000:.0f} ms latency, "
        f"outages {', '.join(f'{a:g}-{a + s:g} s' for a, s in outages)}"
    )
    print()
    print(
        "| worker | RSS start MiB | RSS warm MiB | RSS end MiB | RSS max MiB | end - warm KiB "
        "| fd start | fd end | fd max | delivered | 429s | lost | net-fail episodes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for index, track in enumerate(tracks):
        base = index * SLOTS
        start, warm, end = track.rss[0][1], track.rss_at(args.warmup), track.rss[-1][1]
        peak = max(kib for _, kib in track.rss)
        print(
            f"| {index} | {start / 1024:.1f} | {warm / 1024:.1f} | {end / 1024:.1f} | {peak / 1024:.1f} | "
            f"{end - warm:+d} | {track.fds[0][1]} | {track.fds[-1][1]} | {max(n for _, n in track.fds)} | "
            f"{int(counts[base + DONE])} | "
            f"{int(counts[base + THROTTLED])} | {int(counts[base + LOST])} | {int(counts[base + EPISODES])} |"
        )
    delivered = sum(int(counts[i * SLOTS + DONE]) for i in range(args.workers))
    lost = sum(int(counts[i * SLOTS + LOST]) for i in range(args.workers))
    throttled = sum(int(counts[i * SLOTS + THROTTLED]) for i in range(args.workers))
    growth = sorted(t.rss[-1][1] - t.rss_at(args.warmup) for t in tracks)
    print()
    print(
        f"Totals: delivered {delivered}, lost {lost}, 429s {throttled}; server: admitted {totals['admitted']}, "
        f"refused 429 {totals['throttled']}, faulted (503 or dropped) {totals['failed']}"
    )
    print(
        f"RSS growth after warm-up (end - {args.warmup:g} s), KiB: min {growth[0]:+d}, median "
        f"{growth[len(growth) // 2]:+d}, max {growth[-1]:+d}; fd changes: "
        f"{sorted({t.fds[-1][1] - t.fds[0][1] for t in tracks})}"
    )
    print(
        "Median RSS across workers per sample, MiB (seconds: MiB): "
        + ", ".join(
            f"{at:.0f}: {statistics.median(t.rss[n][1] for t in tracks) / 1024:.2f}"
            for n, (at, _) in enumerate(tracks[0].rss)
            if all(len(t.rss) > n for t in tracks)
        )
    )
    print(
        f"Server (this process, with the sampler): RSS {server_rss[0][1] / 1024:.1f} MiB at start, "
        f"{server_rss[-1][1] / 1024:.1f} MiB at the end"
    )
    errors = [r.error for r in collected if r.error]
    if errors:
        print(f"worker errors: {errors}", file=sys.stderr)
    print()
    print("| interval s | delivered | per second | outage in interval |")
    print("|---|---:|---:|---|")
    edge = 0.0
    while edge < args.duration - 1e-9:
        stop = min(edge + args.interval, args.duration)
        first = next(d for t, d in done_at if t >= edge) if edge else 0.0
        last = next((d for t, d in done_at if t >= stop), done_at[-1][1])
        down = sum(max(0.0, min(stop, a + s) - max(edge, a)) for a, s in outages)
        print(
            f"| {edge:.0f}-{stop:.0f} | {int(last - first)} | {(last - first) / (stop - edge):.1f} | "
            f"{f'{down:g} s' if down else '-'} |"
        )
        edge = stop


if __name__ == "__main__":
    main()
