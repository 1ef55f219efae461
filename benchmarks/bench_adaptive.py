"""Learning the server's real limit (issue 5): four scenarios, the learning client side by side
with the same client not learning (``adaptive="off"``) and the alternatives, in one run.

Each row starts a fresh emulated server on loopback (counting by a sliding log, the
strictest) and 15 uploader processes sharing one API key and one IP, time compressed 60x
(50/second stands for the free tier's 50/minute, 200/second for the paid tier's
200/minute; one of the server's windows is 1 s). The library runs on its default backend,
SQLite. Prints Markdown for benchmarks/RESULTS.md and draws benchmarks/adaptive.png::

    python benchmarks/bench_adaptive.py                    # the figures in RESULTS.md
    python benchmarks/bench_adaptive.py --duration 8 --only misset   # quick

Scenarios:

- ``misset``: told paid (200/second), the server enforces free (50/second) and sends IETF
  ``RateLimit`` headers;
- ``unknown``: no tier given (``tier="auto"``: start at free, discovery allowed), the server
  enforces paid (200/second) with headers;
- ``raised``: told free, discovery allowed, headers; the server's quota doubles halfway;
- ``noheaders``: told paid, the server enforces free and sends only ``Retry-After`` on 429s.

Figures, all counted at the server: ``util %`` over the whole run (see
``ratelimit_client._simulate._report.utilisation``); ``util after 2 W %`` admitted over the
quota from the third window to the last whole second (after convergence); ``429 %`` refused
attempts over all attempts; for ``raised``, the windows from the change until a second
admits at least 90 % of the new quota.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import sys
import time
import typing

from ratelimit_client._simulate import RunSummary, SimulationConfig, available_kinds, run_kind

SCENARIOS = ("misset", "unknown", "raised", "noheaders")
TITLES = {
    "misset": "(a) mis-set tier: told 200/s, server 50/s, headers",
    "unknown": "(b) unknown tier: auto, server 200/s, headers",
    "raised": "(c) limit raised: 50/s -> 100/s halfway, headers",
    "noheaders": "(d) no headers: told 200/s, server 50/s, 429s only",
}
COLUMNS = (
    "| scenario | client | delivered | util % | util after 2 W % | 429s | 429 % | lost | to 90 % of new quota |"
    " learned at end /s |"
)


def configs(scenario: str, duration: float, workers: int) -> tuple[SimulationConfig, float | None]:
    """The simulation for ``scenario``, and when the quota changes (None: it does not)."""
    base: dict[str, typing.Any] = {"workers": workers, "duration": duration, "mode": "sliding_log"}
    if scenario == "misset":
        return SimulationConfig(rate="50/second", client_rate="200/second", headers="ietf", **base), None
    if scenario == "unknown":
        return SimulationConfig(rate="200/second", client_tier="auto", headers="ietf", **base), None
    if scenario == "raised":
        change = round(duration / 2)
        config = SimulationConfig(
            rate="50/second", discover=True, headers="ietf", schedule=((change, "100/second"),), **base
        )
        return config, float(change)
    return SimulationConfig(rate="50/second", client_rate="200/second", headers="none", **base), None


@dataclasses.dataclass(frozen=True)
class Figures:
    util_after: float | None
    throttled_share: float
    to_ninety: int | None  # windows from the change to a second at >= 90 % of the new quota


def figures(summary: RunSummary, change: float | None, window: float = 1.0) -> Figures:
    admitted = summary.admitted_per_second
    quota = summary.quota_per_second
    whole = min(len(admitted), int(summary.wall))  # the last second may be cut short
    start = math.ceil(2 * window)
    steady = range(start, whole)
    capacity = sum(quota[s] for s in steady)
    util_after = 100 * sum(admitted[s] for s in steady) / capacity if capacity else None
    attempts = sum(admitted) + summary.server_throttled
    share = 100 * summary.server_throttled / attempts if attempts else math.nan
    to_ninety = None
    if change is not None:
        first = int(change)
        reached = [s for s in range(first, whole) if admitted[s] >= 0.9 * quota[s]]
        to_ninety = reached[0] - first + 1 if reached else None  # the change's second counts as one
    return Figures(util_after, share, to_ninety)


def row(scenario: str, label: str, summary: RunSummary, change: float | None) -> str:
    f = figures(summary, change)
    util = "n/a" if summary.utilisation is None else f"{summary.utilisation:.1f}"
    after = "n/a" if f.util_after is None else f"{f.util_after:.1f}"
    ninety = "-" if change is None else ("not reached" if f.to_ninety is None else f"{f.to_ninety} W")
    learned = f"{summary.learned_mean[-1]:.1f}" if summary.learned_mean else "-"
    return (
        f"| {scenario} | {label} | {summary.delivered} | {util} | {after} | {summary.server_throttled} | "
        f"{f.throttled_share:.1f} | {summary.lost} | {ninety} | {learned} |"
    )


def draw(results: dict[str, list[tuple[str, RunSummary]]], path: str) -> None:
    import matplotlib  # noqa: PLC0415 - optional

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes_grid = plt.subplots(2, 2, figsize=(13, 8), sharex=True)
    for axes, (scenario, runs) in zip(axes_grid.flat, results.items(), strict=False):
        for label, summary in runs:
            seconds = list(range(len(summary.admitted_per_second)))
            (line,) = axes.plot(seconds, summary.admitted_per_second, label=f"{label} admitted")
            if summary.learned_mean:
                axes.plot(
                    [s + 0.5 for s in range(len(summary.learned_mean))],
                    summary.learned_mean,
                    linestyle=":",
                    color=line.get_color(),
                    label=f"{label} learned rate",
                )
        quota = runs[0][1].quota_per_second
        axes.step(
            range(len(quota) + 1), [*quota, quota[-1]], where="post", color="black", linestyle="--", label="quota"
        )
        axes.set_title(TITLES[scenario], fontsize="medium")
        axes.set_ylabel("requests per second")
        axes.set_ylim(0, max(quota) * 1.6)
    for axes in axes_grid[1]:
        axes.set_xlabel("second of the run")
    axes_grid.flat[0].legend(fontsize="x-small", loc="upper right")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=90)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=16.0)
    parser.add_argument("--workers", type=int, default=15)
    parser.add_argument("--only", choices=SCENARIOS, action="append")
    parser.add_argument("--no-alternatives", action="store_true", help="only the library, learning and not")
    parser.add_argument("--plot", default=os.path.join(os.path.dirname(__file__), "adaptive.png"))
    args = parser.parse_args()
    alternatives = () if args.no_alternatives else tuple(k for k in available_kinds() if k != "ratelimit-client")
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}", file=sys.stderr)
    started = time.monotonic()
    print(COLUMNS)
    print("|" + "---|" * (COLUMNS.count("|") - 1))
    results: dict[str, list[tuple[str, RunSummary]]] = {}
    for scenario in args.only or SCENARIOS:
        config, change = configs(scenario, args.duration, args.workers)
        variants: list[tuple[str, SimulationConfig, typing.Any]] = [
            ("ratelimit-client (learning)", config, "ratelimit-client"),
            ("ratelimit-client (adaptive off)", dataclasses.replace(config, adaptive="off"), "ratelimit-client"),
            *((kind, dataclasses.replace(config, kinds=(kind,)), kind) for kind in alternatives),
        ]
        for label, variant, kind in variants:
            summary = run_kind(variant, kind, None)
            print(row(scenario, label, summary, change), flush=True)
            for error in summary.errors:
                print(f"  worker error: {error}", file=sys.stderr)
            results.setdefault(scenario, []).append((label, summary))
    draw(results, args.plot)
    print(f"plot: {args.plot}", file=sys.stderr)
    print(f"# total {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
