"""Run a simulation: the emulated API on a free loopback port, N uploader processes, live progress."""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import queue
import sys
import tempfile
import time
import typing
import uuid

from .._backends import check_url
from .._config import load_settings
from .._exceptions import ConfigError
from .._learner import format_rate
from .._rate import DEFAULT_TIERS, Rate, pacing_for, parse_rate
from ..server import Faults, ServerConfig, background_server
from ..server._counting import Mode
from ..server._middleware import HeaderStyle
from ._report import RunSummary, jain, per_second, percentile, quota_at, utilisation
from ._workers import (
    DONE,
    KINDS,
    LEARNED,
    LOST,
    SLOTS,
    STATUS,
    STATUS_FAILING,
    THROTTLED,
    Kind,
    WorkerResult,
    WorkerSpec,
)

if typing.TYPE_CHECKING:
    from .._adaptive import AdaptiveMode

__all__ = ["SimulationConfig", "run_kind", "run_simulation"]

_READY_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class SimulationConfig:
    """A simulation: ``workers`` processes over ``keys`` API keys and ``ips`` source addresses.

    ``rate`` is the quota the server enforces per client IP and API key; ``client_rate``
    what the clients are told (the same unless testing a mis-set tier); ``client_tier="auto"``
    tells them nothing: they start at the free tier's 50 requests per window of ``rate``
    (50/second when time is compressed 60x) and may discover more. ``headers`` is the
    rate-limit header style the server sends; ``schedule`` is ``(seconds into the run,
    rate)`` pairs from which the server enforces another quota. ``adaptive`` and
    ``discover`` are the library's learning settings.
    """

    workers: int = 15
    rate: str = "50/second"
    client_rate: str | None = None
    duration: float = 10.0
    mode: Mode = "gcra"
    backend: str | None = None
    keys: int = 1
    ips: int = 1
    outage: tuple[float, float] | None = None
    kinds: tuple[Kind, ...] = ("ratelimit-client",)
    body_size: int = 1024
    headers: HeaderStyle = "none"
    schedule: tuple[tuple[float, str], ...] = ()
    adaptive: AdaptiveMode = "full"
    discover: bool = False
    client_tier: typing.Literal["auto"] | None = None

    def __post_init__(self) -> None:
        parse_rate(self.rate, field="rate")
        if self.client_rate is not None:
            parse_rate(self.client_rate, field="client_rate")
        for name in ("workers", "keys", "ips"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(name, value, "an integer of at least 1")
        if self.ips > 254:
            raise ConfigError("ips", self.ips, "at most 254 (127.0.0.1 to 127.0.0.254)")
        if not (math.isfinite(self.duration) and self.duration > 0):
            raise ConfigError("duration", self.duration, "a positive number of seconds")
        if self.backend is not None:
            check_url(self.backend)
        self._check_learning()

    def _check_learning(self) -> None:
        if self.headers not in ("none", "ietf", "x-ratelimit"):
            raise ConfigError("headers", self.headers, "'none', 'ietf' or 'x-ratelimit'")
        for at, rate in self.schedule:
            parse_rate(rate, field="schedule")
            if not (math.isfinite(at) and at >= 0):
                raise ConfigError("schedule", at, "seconds into the run, 0 or more")
        if self.adaptive not in ("off", "headers", "full"):
            raise ConfigError("adaptive", self.adaptive, "'off', 'headers' or 'full'")
        if self.client_tier not in (None, "auto"):
            raise ConfigError("client_tier", self.client_tier, "'auto' or unset")
        if self.client_tier is not None and self.client_rate is not None:
            raise ConfigError("client_tier", self.client_tier, "unset when client_rate is given")
        for kind in self.kinds:
            if kind not in KINDS:
                raise ConfigError("kind", kind, f"one of {', '.join(KINDS)}")

    @property
    def quota(self) -> Rate:
        return parse_rate(self.rate)

    @property
    def told(self) -> str:
        """The rate the clients are configured with."""
        if self.client_tier == "auto":
            free = DEFAULT_TIERS["free"].requests
            return f"{free:g}/{self.quota.per_seconds:g}s"
        return self.client_rate or self.rate

    @property
    def discovers(self) -> bool:
        """Whether the clients may learn a rate above the one they were told."""
        return self.discover or self.client_tier == "auto"

    @property
    def schedule_per_second(self) -> tuple[tuple[float, float], ...]:
        return tuple((at, parse_rate(rate).per_second) for at, rate in self.schedule)

    @property
    def effective_backend(self) -> str:
        return load_settings(backend=self.backend).backend


def _context() -> typing.Any:
    # forkserver: children fork from a clean process that has imported the worker once,
    # so 15 start fast and none inherits the server thread of this one.
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # httpx imports httpcore lazily, and anyio its asyncio backend: both cost a
        # second of CPU per process on a small machine unless imported here once.
        context.set_forkserver_preload(
            ["ratelimit_client._simulate._workers", "httpcore", "h11", "anyio._backends._asyncio", "sqlite3"]
        )
        return context
    return multiprocessing.get_context("spawn")


class _Printer:
    """Live progress on a stream: one rewritten line on a terminal, a line a second otherwise."""

    def __init__(self, stream: typing.TextIO | None) -> None:
        self.stream = stream
        self.tty = bool(stream is not None and stream.isatty())
        self._last_line = 0.0

    def show(self, text: str, *, final: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + text.ljust(110)[:110] + ("\n" if final else ""))
        elif final or now - self._last_line >= 1.0:
            self.stream.write(text + "\n")
            self._last_line = now
        self.stream.flush()


def _learned(counts: list[float], workers: int) -> list[float]:
    return [counts[i * SLOTS + LEARNED] for i in range(workers) if counts[i * SLOTS + LEARNED] > 0]


def _sample(into: list[tuple[float, float, float]], at: float, counts: list[float], workers: int) -> None:
    paced = _learned(counts, workers)
    if paced:
        into.append((at, min(paced), sum(paced) / len(paced)))


def _progress_line(
    kind: str, *, elapsed: float, duration: float, counts: list[float], workers: int, rate: float
) -> str:
    def total(slot: int) -> int:
        return int(sum(counts[i * SLOTS + slot] for i in range(workers)))

    failing = sum(1 for i in range(workers) if counts[i * SLOTS + STATUS] == STATUS_FAILING)
    status = "network failure" if failing else ("throttled" if total(THROTTLED) else "ok")
    learned = _learned(counts, workers)
    shown = f"  learned {format_rate(sum(learned) / len(learned))}" if learned else ""
    return (
        f"{kind:<16} {min(elapsed, duration):5.1f}/{duration:.0f} s  delivered {total(DONE):6d} "
        f"({rate:6.1f}/s){shown}  429s {total(THROTTLED):5d}  lost {total(LOST):4d}  "
        f"failing {failing:2d}/{workers}  status: {status}"
    )


def run_kind(config: SimulationConfig, kind: Kind, stream: typing.TextIO | None = None) -> RunSummary:
    """Run one client kind against a fresh emulated server and summarise it."""
    quota = config.quota
    server_config = ServerConfig(
        tiers={"sim": quota},
        default_tier="sim",
        mode=config.mode,
        # Time may be compressed (50/second for 50/minute): whole seconds would stretch waits.
        retry_after="fractional" if quota.per_seconds < 60 else "seconds",
        faults=Faults(),
        headers=config.headers,
        schedule=config.schedule,
    )
    printer = _Printer(stream)
    context = _context()
    namespace = f"simulate-{uuid.uuid4().hex[:12]}"  # a fresh shared bucket for every run
    with tempfile.TemporaryDirectory(prefix="ratelimit-sim-") as scratch, background_server(server_config) as server:
        array = context.Array("d", config.workers * SLOTS, lock=False)
        go = context.Event()
        results: multiprocessing.Queue[tuple[str, object]] = context.Queue()
        processes = []
        for index in range(config.workers):
            spec = WorkerSpec(
                index=index,
                kind=kind,
                url=server.url,
                api_key=f"sim-key-{index % config.keys}",
                source_ip=f"127.0.0.{1 + index % config.ips}" if config.ips > 1 else None,
                rate=config.told,
                backend=config.backend,
                duration=config.duration,
                body_size=config.body_size,
                namespace=namespace,
                shared_path=os.path.join(scratch, "pyrate.sqlite"),
                adaptive=config.adaptive,
                discover=config.discovers,
            )
            process = context.Process(target=_entry, args=(spec, array, go, results), daemon=True)
            process.start()
            processes.append(process)
        try:
            finished = _drive(
                config,
                kind=kind,
                server=server,
                array=array,
                go=go,
                results=results,
                processes=processes,
                printer=printer,
            )
        finally:
            for process in processes:
                process.join(5)
                if process.is_alive():
                    process.kill()
        began = finished.began - server.stats.started
        events = [(at - began, what, ip, key) for at, what, ip, key in server.stats.events]
        outages = [(a - finished.began, b - finished.began) for a, b in server.outages.windows]
    return _summarise(config, kind, finished, events, outages)


def _entry(spec: WorkerSpec, array: typing.Any, go: typing.Any, results: typing.Any) -> None:
    from ._workers import worker_main  # noqa: PLC0415 - preloaded by the forkserver

    worker_main(spec, array, go, results)


@dataclasses.dataclass(slots=True)
class _Finished:
    began: float
    wall: float
    results: list[WorkerResult]
    learned: list[tuple[float, float, float]]  # (seconds into the run, slowest, mean) over workers


def _drive(
    config: SimulationConfig,
    *,
    kind: Kind,
    server: typing.Any,
    array: typing.Any,
    go: typing.Any,
    results: typing.Any,
    processes: list[typing.Any],
    printer: _Printer,
) -> _Finished:
    ready = 0
    deadline = time.monotonic() + _READY_TIMEOUT
    collected: list[WorkerResult] = []
    while ready < config.workers:
        try:
            message, value = results.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(
                f"{config.workers - ready} worker(s) did not start within {_READY_TIMEOUT:.0f} s"
            ) from None
        if message == "ready":
            ready += 1
        else:
            collected.append(typing.cast("WorkerResult", value))
            ready += 1  # a worker that failed before it was ready
    began = time.monotonic()
    if config.outage is not None:
        server.outages.schedule(config.outage[0], config.outage[1])
    if server.limiter is not None:
        server.limiter.start_schedule()  # the schedule counts from the run's start
    go.set()
    learned: list[tuple[float, float, float]] = []
    history: list[tuple[float, float]] = [(began, 0.0)]
    while len(collected) < config.workers:
        try:
            message, value = results.get(timeout=0.25)
            if message == "result":
                collected.append(typing.cast("WorkerResult", value))
        except queue.Empty:
            if not any(p.is_alive() for p in processes):
                break
        now = time.monotonic()
        counts = list(array)
        done = sum(counts[i * SLOTS + DONE] for i in range(config.workers))
        history.append((now, done))
        while len(history) > 2 and now - history[1][0] >= 2.0:
            history.pop(0)
        rate = (done - history[0][1]) / max(1e-9, now - history[0][0])
        _sample(learned, now - began, counts, config.workers)
        printer.show(
            _progress_line(
                kind, elapsed=now - began, duration=config.duration, counts=counts, workers=config.workers, rate=rate
            )
        )
    wall = time.monotonic() - began
    counts = list(array)
    average = sum(counts[i * SLOTS + DONE] for i in range(config.workers)) / max(wall, 1e-9)
    printer.show(
        _progress_line(
            kind, elapsed=wall, duration=config.duration, counts=counts, workers=config.workers, rate=average
        ),
        final=True,
    )
    missing = config.workers - len(collected)
    for index in range(missing):
        collected.append(WorkerResult(-1 - index, 0, 0, 0, 0, (), error="worker exited without a result"))
    return _Finished(began, wall, collected, learned)


def _summarise(
    config: SimulationConfig,
    kind: Kind,
    finished: _Finished,
    events: list[tuple[float, str, str, str]],
    outages: list[tuple[float, float]],
) -> RunSummary:
    results = sorted(finished.results, key=lambda r: r.index)
    latencies = [latency for r in results for latency in r.latencies]
    in_run = [e for e in events if e[0] >= 0]
    identities = len({(ip, key) for _, what, ip, key in in_run if what == "admitted"})
    seconds = max(1, math.ceil(finished.wall))
    schedule = config.schedule_per_second
    learns = kind == "ratelimit-client" and config.adaptive != "off"
    return RunSummary(
        kind=kind,
        mode=config.mode,
        workers=config.workers,
        quota=str(config.quota),
        client_rate=str(parse_rate(config.told)),
        backend=config.effective_backend if kind == "ratelimit-client" else "-",
        identities=identities,
        delivered=sum(r.delivered for r in results),
        lost=sum(r.lost for r in results),
        throttled=sum(r.throttled for r in results),
        server_throttled=sum(1 for e in in_run if e[1] == "throttled"),
        failure_episodes=sum(r.episodes for r in results),
        utilisation=utilisation(in_run, config.quota.per_second, outages, schedule),
        jain=jain([float(r.delivered) for r in results]),
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        wall=finished.wall,
        per_worker=tuple(r.delivered for r in results),
        errors=tuple(r.error for r in results if r.error),
        admitted_per_second=per_second(in_run, "admitted", finished.wall),
        throttled_per_second=per_second(in_run, "throttled", finished.wall),
        adaptive=config.adaptive if kind == "ratelimit-client" else "off",
        configured_rate=pacing_for(parse_rate(config.told)).rate.per_second if kind == "ratelimit-client" else None,
        learned_min=_per_second([(at, low) for at, low, _ in finished.learned], seconds, min) if learns else (),
        learned_mean=_per_second([(at, mean) for at, _, mean in finished.learned], seconds, _mean) if learns else (),
        quota_per_second=tuple(quota_at(s, config.quota.per_second, schedule) for s in range(seconds)),
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _per_second(
    samples: list[tuple[float, float]], seconds: int, combine: typing.Callable[[list[float]], float]
) -> tuple[float, ...]:
    """Samples folded into whole seconds; a second with none repeats the one before."""
    buckets: list[list[float]] = [[] for _ in range(seconds)]
    for at, value in samples:
        if at >= 0:
            buckets[min(int(at), seconds - 1)].append(value)
    out: list[float] = []
    for bucket in buckets:
        out.append(combine(bucket) if bucket else (out[-1] if out else math.nan))
    return tuple(out)


def available_kinds() -> tuple[Kind, ...]:
    """The client kinds whose libraries are installed here."""
    import importlib.util  # noqa: PLC0415

    needs = {"aiolimiter": ("aiolimiter",), "pyrate-limiter": ("pyrate_limiter", "filelock")}
    return tuple(k for k in KINDS if all(importlib.util.find_spec(m) is not None for m in needs.get(k, ())))


def run_simulation(config: SimulationConfig, stream: typing.TextIO | None = sys.stderr) -> list[RunSummary]:
    """Run every kind in ``config.kinds``, one after another, each on a fresh server."""
    return [run_kind(config, kind, stream) for kind in config.kinds]
