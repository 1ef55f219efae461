"""The 15-process scenario (issue 4): the library against each server counting mode, with a
3-second outage, with a mis-set tier, and side by side with the alternatives.

Each run starts a fresh emulated server on loopback and 15 uploader processes sharing one
API key (one IP), time compressed 60x: the server enforces 50/second, the free tier's
50/minute. Utilisation is measured at the server (see ``ratelimit_client._simulate._report.
utilisation``). Prints Markdown tables for benchmarks/RESULTS.md and draws the comparison::

    python benchmarks/bench_simulate.py                       # the figures in RESULTS.md
    python benchmarks/bench_simulate.py --duration 8 --only modes   # quick

Rows: each counting mode with the tier set; the same with a 3 s outage mid-run; the client
told the paid tier while the server enforces the free one; the strictest server at 12x
instead of 60x compression; and every installed client kind against the sliding log.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import typing

from ratelimit_client._simulate import RunSummary, SimulationConfig, available_kinds, plot, run_kind
from ratelimit_client.server import MODES

COLUMNS = "| scenario | client | mode | delivered | util % | 429s | lost | net-fail | Jain | p50 ms | p99 ms |"


def row(scenario: str, summary: RunSummary) -> str:
    util = "n/a" if summary.utilisation is None else f"{summary.utilisation:.1f}"
    return (
        f"| {scenario} | {summary.kind} | {summary.mode} | {summary.delivered} | {util} | {summary.throttled} | "
        f"{summary.lost} | {summary.failure_episodes} | {summary.jain:.3f} | {summary.p50 * 1000:.0f} | "
        f"{summary.p99 * 1000:.0f} |"
    )


def run(scenario: str, config: SimulationConfig, kind: typing.Any = "ratelimit-client") -> RunSummary:
    summary = run_kind(config, kind, None)
    line = row(scenario, summary)
    print(line, flush=True)
    for error in summary.errors:
        print(f"  worker error: {error}", file=sys.stderr)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=15)
    parser.add_argument("--rate", default="50/second")
    parser.add_argument("--only", choices=("modes", "outage", "misset", "slower", "compare"), action="append")
    parser.add_argument("--plot", default=os.path.join(os.path.dirname(__file__), "simulate.png"))
    args = parser.parse_args()
    only = set(args.only or ("modes", "outage", "misset", "slower", "compare"))
    base = {"workers": args.workers, "rate": args.rate, "duration": args.duration}
    outage_at = round(args.duration / 2 - 1.5, 1)
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}", file=sys.stderr)
    started = time.monotonic()
    print(COLUMNS)
    print("|" + "---|" * (COLUMNS.count("|") - 1))
    if "modes" in only:
        for mode in MODES:
            run("tier set", SimulationConfig(mode=mode, **base))
    if "outage" in only:
        for mode in MODES:
            run(f"3 s outage at {outage_at:g} s", SimulationConfig(mode=mode, outage=(outage_at, 3.0), **base))
    if "misset" in only:
        run("tier mis-set (told paid)", SimulationConfig(mode="sliding_log", client_rate="200/second", **base))
    if "slower" in only:
        # 12x instead of 60x: one request of slack is 100 ms instead of 20 ms.
        slower = {**base, "rate": "50/5s", "duration": 2 * args.duration}
        run("12x compression (50 per 5 s)", SimulationConfig(mode="sliding_log", **slower))
    if "compare" in only:
        summaries = [
            run("compare", SimulationConfig(mode="sliding_log", kinds=(kind,), **base), kind)
            for kind in available_kinds()
        ]
        plot(summaries, SimulationConfig(**base).quota.per_second, args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)
    print(f"# total {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
