"""The numbers a simulation ends with, how they are computed, and the table and plot that show them."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import typing

__all__ = ["RunSummary", "format_table", "jain", "percentile", "plot", "quota_at", "utilisation"]

# (seconds since the run began, "admitted" | "throttled" | "failed", ip, hashed key)
ServerEvent = tuple[float, str, str, str]


def jain(values: typing.Sequence[float]) -> float:
    """Jain's fairness index: 1 when all shares are equal, 1/n when one takes everything."""
    total = sum(values)
    squares = sum(v * v for v in values)
    if not values or squares == 0:
        return 1.0 if values else math.nan
    return total * total / (len(values) * squares)


def percentile(values: typing.Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def quota_at(at: float, per_second: float, schedule: typing.Sequence[tuple[float, float]] = ()) -> float:
    """The quota (requests per second) in force ``at`` seconds into the run, given the schedule."""
    for start, rate in sorted(schedule):
        if at >= start:
            per_second = rate
    return per_second


def _capacity(
    first: float,
    last: float,
    per_second: float,
    schedule: typing.Sequence[tuple[float, float]],
    outages: typing.Sequence[tuple[float, float]],
) -> float:
    # Split [first, last] wherever the quota changes or an outage begins or ends; each piece
    # is either down (no capacity) or at one quota.
    cuts = {first, last, *(at for at, _ in schedule), *(t for window in outages for t in window)}
    points = sorted(t for t in cuts if first <= t <= last)
    total = 0.0
    for a, b in itertools.pairwise(points):
        middle = (a + b) / 2
        if not any(start <= middle < end for start, end in outages):
            total += quota_at(middle, per_second, schedule) * (b - a)
    return total


def utilisation(
    events: typing.Iterable[ServerEvent],
    per_second: float,
    outages: typing.Sequence[tuple[float, float]] = (),
    schedule: typing.Sequence[tuple[float, float]] = (),
) -> float | None:
    """Admitted requests against the quota, in %, measured at the server.

    For each identity the quota applies to (client IP + API key), the requests it had
    admitted after its first, over ``per_second`` times the time from its first to its
    last admitted request less any outage within: the share of the quota's steady rate
    the clients used while they were uploading. The first request is not counted because
    it opens the interval (n requests span n-1 intervals). ``schedule`` is
    ``(seconds into the run, requests per second)`` pairs where the quota changes.
    """
    times: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for at, outcome, ip, key in events:
        if outcome == "admitted":
            times[ip, key].append(at)
    used = capacity = 0.0
    for admitted in times.values():
        first, last = min(admitted), max(admitted)
        used += len(admitted) - 1
        capacity += _capacity(first, last, per_second, schedule, outages)
    return 100 * used / capacity if capacity > 0 else None


@dataclasses.dataclass(frozen=True, slots=True)
class RunSummary:
    """One client kind's run. Rates in requests per second; latencies in seconds."""

    kind: str
    mode: str
    workers: int
    quota: str
    client_rate: str
    backend: str
    identities: int
    delivered: int
    lost: int
    throttled: int
    server_throttled: int
    failure_episodes: int
    utilisation: float | None
    jain: float
    p50: float
    p99: float
    wall: float
    per_worker: tuple[int, ...]
    errors: tuple[str, ...] = ()
    admitted_per_second: tuple[int, ...] = ()
    throttled_per_second: tuple[int, ...] = ()
    # Learning (empty for kinds that learn nothing): the rate the clients pace at
    # unlearned, and each second's slowest and mean pacing over the workers; the quota
    # the server enforced each second. All requests per second per key.
    adaptive: str = "off"
    configured_rate: float | None = None
    learned_min: tuple[float, ...] = ()
    learned_mean: tuple[float, ...] = ()
    quota_per_second: tuple[float, ...] = ()

    def to_json(self) -> dict[str, object]:
        out = dataclasses.asdict(self)
        out["p50_ms"], out["p99_ms"] = _ms(self.p50), _ms(self.p99)
        del out["p50"], out["p99"]
        out["learned_min"] = [round(v, 2) for v in self.learned_min]
        out["learned_mean"] = [round(v, 2) for v in self.learned_mean]
        if self.configured_rate is not None:
            out["configured_rate"] = round(self.configured_rate, 4)
        for name in ("utilisation", "jain", "wall"):
            value = out[name]
            out[name] = None if value is None or (isinstance(value, float) and math.isnan(value)) else round(value, 4)
        return out


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 2)


def per_second(events: typing.Iterable[ServerEvent], outcome: str, duration: float) -> tuple[int, ...]:
    """How many events of ``outcome`` fell in each whole second of the run."""
    counts = [0] * max(1, math.ceil(duration))
    for at, what, _, _ in events:
        if what == outcome and at >= 0:
            index = min(int(at), len(counts) - 1)
            counts[index] += 1
    return tuple(counts)


_COLUMNS = (
    ("client", "{:<18}", "kind"),
    ("delivered", "{:>9}", "delivered"),
    ("util %", "{:>7}", "utilisation"),
    ("429s", "{:>6}", "throttled"),
    ("lost", "{:>5}", "lost"),
    ("net-fail", "{:>8}", "failure_episodes"),
    ("Jain", "{:>6}", "jain"),
    ("p50 ms", "{:>8}", "p50"),
    ("p99 ms", "{:>8}", "p99"),
    ("wall s", "{:>7}", "wall"),
)


def _cell(summary: RunSummary, name: str) -> str:
    value = getattr(summary, name)
    if name == "utilisation":
        return "n/a" if value is None else f"{value:.1f}"
    if name == "jain":
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    if name in ("p50", "p99"):
        return "n/a" if math.isnan(value) else f"{value * 1000:.0f}"
    if name == "wall":
        return f"{value:.1f}"
    return str(value)


def format_table(summaries: typing.Sequence[RunSummary]) -> str:
    """The summary table, one row per client kind, plain text."""
    header = " ".join(fmt.format(title) for title, fmt, _ in _COLUMNS)
    lines = [header, "-" * len(header)]
    lines += [" ".join(fmt.format(_cell(s, name)) for _, fmt, name in _COLUMNS) for s in summaries]
    return "\n".join(lines)


def plot(summaries: typing.Sequence[RunSummary], quota_per_second: float, path: str) -> None:
    """Admitted requests per second per client kind against the quota line, 429s marked,
    and each learning kind's learned rate (dotted)."""
    try:
        import matplotlib  # noqa: PLC0415 - optional extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        from .._exceptions import ConfigError  # noqa: PLC0415

        raise ConfigError("plot", path, "matplotlib installed: pip install 'ratelimit-client[plot]'") from None
    figure, axes = plt.subplots(figsize=(9, 4.5))
    for summary in summaries:
        seconds = range(len(summary.admitted_per_second))
        (line,) = axes.plot(list(seconds), summary.admitted_per_second, label=f"{summary.kind} admitted")
        if summary.learned_mean:
            # The pacing of one identity times the identities: comparable with the quota line.
            scale = max(1, summary.identities)
            axes.plot(
                [s + 0.5 for s in range(len(summary.learned_mean))],
                [rate * scale for rate in summary.learned_mean],
                linestyle=":",
                color=line.get_color(),
                label=f"{summary.kind} learned rate",
            )
        marked = [(s, summary.admitted_per_second[s]) for s in seconds if summary.throttled_per_second[s]]
        if marked:
            axes.scatter(
                [s for s, _ in marked],
                [a for _, a in marked],
                marker="x",
                color=line.get_color(),
                label=f"{summary.kind}: 429s that second",
            )
    identities = max((s.identities for s in summaries), default=1)
    series = next((s.quota_per_second for s in summaries if s.quota_per_second), ())
    if series and len(set(series)) > 1:  # the quota changed during the run: draw it as steps
        axes.step(
            list(range(len(series) + 1)),
            [q * identities for q in (*series, series[-1])],
            where="post",
            color="black",
            linestyle="--",
            label="quota",
        )
    else:
        axes.axhline(quota_per_second * identities, color="black", linestyle="--", label="quota")
    axes.set_xlabel("second of the run")
    axes.set_ylabel("requests per second")
    axes.set_title("Admitted requests per second by client kind (x: a second with 429s)")
    axes.legend(fontsize="small", loc="lower right")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)
