"""What the transport layer adds to a request, counted rather than timed (issue 2).

Runs httpx clients in process (``httpx.MockTransport`` inside, as part 2 of
``bench_core.py``) under valgrind's cachegrind, and reports per request the machine
instructions and the simulated L1 instruction and data cache misses that
``RateLimitTransport`` / ``AsyncRateLimitTransport`` add to a bare client. Counts do not
move with other jobs' load as timings do on the shared box, so a change to the request
path can be judged from one run; they are not times (a miss costs far more than an
instruction, and real caches are not cachegrind's). Each figure is the difference between
a run of N and one of N/6 requests, divided by the 5N/6 requests between them, so start-up
cancels out. Hash randomisation is off so that two runs count alike.

Needs valgrind (``apt install valgrind``)::

    python benchmarks/bench_instructions.py                    # this checkout
    python benchmarks/bench_instructions.py --ref b16091c      # and a past commit, side by side
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import typing
from pathlib import Path

import httpx

# In a child run for --ref, the past commit's package: PYTHONPATH puts it first.
import ratelimit_client as rc

EVENTS = ("Ir", "I1mr", "D1mr")
LABELS = {"Ir": "instructions", "I1mr": "L1 instruction misses", "D1mr": "L1 data read misses"}
URL = "http://127.0.0.1:8000/"
HEADERS = {"authorization": "Bearer bench-secret-key"}


def child(variant: str, mode: str, requests: int) -> None:
    """Send ``requests`` GETs through a bare client or one with our transport."""

    def ok(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"ok")

    options: dict[str, typing.Any] = {"rate": rc.Rate(1_000_000_000, 1), "burst": 1_000_000, "backend": "memory://"}
    if mode == "sync":
        sync_transport = (
            httpx.MockTransport(ok) if variant == "bare" else rc.RateLimitTransport(httpx.MockTransport(ok), **options)
        )
        with httpx.Client(transport=sync_transport, headers=HEADERS) as client:
            for _ in range(requests):
                client.get(URL)
        return

    async def run() -> None:
        async_transport = (
            httpx.MockTransport(ok)
            if variant == "bare"
            else rc.AsyncRateLimitTransport(httpx.MockTransport(ok), **options)
        )
        async with httpx.AsyncClient(transport=async_transport, headers=HEADERS) as client:
            for _ in range(requests):
                await client.get(URL)

    asyncio.run(run())


def count(variant: str, mode: str, requests: int, library: Path | None, scratch: Path) -> dict[str, int]:
    """Cachegrind's totals for one child run."""
    out = scratch / f"cg.{variant}.{mode}.{requests}.{library.name if library else 'here'}"
    env = dict(os.environ, PYTHONHASHSEED="0")
    if library is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(library), env.get("PYTHONPATH", "")])
    command = [
        "valgrind", "--tool=cachegrind", "--cache-sim=yes", f"--cachegrind-out-file={out}",
        sys.executable, __file__, "--child", variant, mode, str(requests),
    ]  # fmt: skip
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events: list[str] = []
    for line in out.read_text().splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("summary:"):
            return dict(zip(events, map(int, line.split()[1:]), strict=True))
    raise RuntimeError(f"no summary in {out}")


def export(ref: str, scratch: Path) -> Path:
    """The library's package as it was at ``ref``, in a folder to put first on the path."""
    folder = scratch / f"at-{ref}"
    folder.mkdir()
    archive = subprocess.run(
        ["git", "archive", ref, "ratelimit_client"], check=True, capture_output=True, cwd=Path(__file__).parent.parent
    ).stdout
    archive_path = scratch / f"{ref}.tar"
    archive_path.write_bytes(archive)
    with tarfile.open(archive_path) as tar:
        tar.extractall(folder, filter="data")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1200, help="requests in the longer run")
    parser.add_argument("--ref", help="also count the library at this git commit")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not on PATH (apt install valgrind)")
    scratch = Path(tempfile.mkdtemp(prefix="bench_instructions_"))
    try:
        libraries: list[tuple[str, Path | None]] = [("this checkout", None)]
        if args.ref:
            libraries.append((args.ref, export(args.ref, scratch)))
        long, short = args.requests, args.requests // 6
        runs = [
            (variant, mode, n, library)
            for mode in ("sync", "async")
            for variant, library in [("bare", None)] + [(name, path) for name, path in libraries]
            for n in (short, long)
        ]
        with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            futures = {
                run: pool.submit(count, "bare" if run[0] == "bare" else "ours", *run[1:3], run[3], scratch)
                for run in runs
            }
            totals = {run: future.result() for run, future in futures.items()}

        def per_request(variant: str, mode: str, library: Path | None) -> dict[str, float]:
            a, b = totals[variant, mode, short, library], totals[variant, mode, long, library]
            return {event: (b[event] - a[event]) / (long - short) for event in EVENTS}

        print(f"Per request, in process (httpx.MockTransport inside), {long - short} requests counted:\n")
        print("| client | " + " | ".join(LABELS[event] for event in EVENTS) + " |")
        print("|---|" + "---:|" * len(EVENTS))
        for mode in ("sync", "async"):
            bare = per_request("bare", mode, None)
            print(f"| {mode}, bare httpx | " + " | ".join(f"{bare[event]:,.0f}" for event in EVENTS) + " |")
            for name, library in libraries:
                ours = per_request(name, mode, library)
                cells = [
                    f"+{ours[event] - bare[event]:,.0f} ({(ours[event] - bare[event]) / bare[event]:+.1%})"
                    for event in EVENTS
                ]
                print(f"| {mode}, our transport ({name}) | " + " | ".join(cells) + " |")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
