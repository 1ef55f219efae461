"""The server middleware's memory under a flood of distinct API keys and client IPs (issue 6).

Drives :class:`ratelimit_client.server.RateLimitMiddleware` in-process through its ASGI
interface: every request comes from the trusted proxy 127.0.0.1 with a new API key
(``Authorization: Bearer``) and a new ``X-Forwarded-For`` address, so every request is a
new identity. Every ``--every`` requests it records the identities tracked, the bytes
Python holds that were allocated since the start (``tracemalloc``) and the process RSS.
Each counting mode runs twice in fresh child processes: once traced, once untraced for RSS
(tracemalloc's own bookkeeping would inflate RSS)::

    python benchmarks/soak_server_memory.py                          # the figures in RESULTS.md
    python benchmarks/soak_server_memory.py --requests 40000 --max-keys 10000   # quick

The claim checked: tracked identities stop at ``max_keys`` and memory stops growing there.
One step after the bound is reached is expected: the OrderedDict's table, full of the
evicted entries' dummies, is rebuilt once at a larger size (about 175 000 insertions for
100 000 live keys); from then on it is rebuilt at the same size.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import platform
import subprocess
import sys
import time
import tracemalloc
import typing

from ratelimit_client.server import MODES, Mode, RateLimitMiddleware

Message = typing.MutableMapping[str, typing.Any]


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _ok(scope: Message, receive: typing.Any, send: typing.Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def flood(mode: Mode, requests: int, max_keys: int, every: int, traced: bool) -> list[dict[str, float]]:
    """Send ``requests`` requests, each a new key and IP; a checkpoint every ``every``."""
    middleware = RateLimitMiddleware(
        _ok, tiers={"free": "50/minute"}, mode=mode, trusted_proxies=["127.0.0.1"], max_keys=max_keys
    )
    statuses: dict[int, int] = {}

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] = statuses.get(message["status"], 0) + 1

    base = int(ipaddress.ip_address("100.64.0.0"))  # shared address space: ~4 M distinct IPs
    if traced:
        tracemalloc.start()
    start_rss = rss_kib()
    points = [{"requests": 0, "tracked": 0, "traced_mib": 0.0, "rss_mib": start_rss / 1024, "seconds": 0.0}]
    began = time.perf_counter()
    for i in range(1, requests + 1):
        scope: Message = {
            "type": "http",
            "method": "POST",
            "path": "/upload",
            "client": ("127.0.0.1", 40000 + i % 20000),
            "headers": [
                (b"authorization", f"Bearer flood-key-{i:09d}".encode()),
                (b"x-forwarded-for", str(ipaddress.ip_address(base + i)).encode()),
            ],
        }
        await middleware(scope, receive, send)
        if i % every == 0:
            current = tracemalloc.get_traced_memory()[0] if traced else 0
            points.append(
                {
                    "requests": i,
                    "tracked": middleware.tracked,
                    "traced_mib": current / 2**20,
                    "rss_mib": rss_kib() / 1024,
                    "seconds": time.perf_counter() - began,
                }
            )
    assert statuses == {200: requests}, statuses  # every request was a new identity: all admitted
    return points


def child(args: argparse.Namespace) -> None:
    points = asyncio.run(flood(typing.cast("Mode", args.child), args.requests, args.max_keys, args.every, args.traced))
    print(json.dumps(points))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400_000, help="requests, each a new key and IP")
    parser.add_argument("--max-keys", type=int, default=100_000, help="the middleware's bound (its default)")
    parser.add_argument("--every", type=int, default=50_000, help="requests between checkpoints")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(
        f"Machine: CPython {platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}; {args.requests} requests, each a new API key and X-Forwarded-For IP, "
        f"max_keys={args.max_keys}"
    )
    for mode in args.modes:
        runs = {}
        for traced in (True, False):
            command = [sys.executable, __file__, "--child", mode, "--requests", str(args.requests)]
            command += ["--max-keys", str(args.max_keys), "--every", str(args.every)]
            output = subprocess.run([*command, *(["--traced"] if traced else [])], check=True, capture_output=True)
            runs[traced] = json.loads(output.stdout)
        print()
        print(f"mode {mode}:")
        print()
        print("| requests | tracked identities | traced MiB (tracemalloc) | RSS MiB (untraced run) |")
        print("|---:|---:|---:|---:|")
        for point, untraced in zip(runs[True], runs[False], strict=True):
            print(
                f"| {point['requests']:,} | {point['tracked']:,} | {point['traced_mib']:.1f} | "
                f"{untraced['rss_mib']:.1f} |"
            )
        seconds = runs[False][-1]["seconds"]
        print(f"\nuntraced: {seconds:.1f} s, {seconds / args.requests * 1e6:.1f} µs a request")


if __name__ == "__main__":
    main()
