"""The ``ratelimit-client`` command: ``simulate``, ``serve`` and ``config``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import typing

from ._backends import shown_url
from ._config import load_settings
from ._exceptions import ConfigError
from ._rate import pacing_for, parse_rate

__all__ = ["main"]


def _outage(value: str) -> tuple[float, float]:
    at, sep, seconds = value.partition(":")
    try:
        parsed = (float(at), float(seconds))
    except ValueError:
        parsed = (-1.0, 0.0)
    if not sep or parsed[0] < 0 or parsed[1] <= 0:
        raise argparse.ArgumentTypeError(f"expected AT:SECONDS such as 5:3, got {value!r}")
    return parsed


def _share(value: str) -> float:
    try:
        share = float(value)
    except ValueError:
        share = -1.0
    if not 0 <= share <= 1:
        raise argparse.ArgumentTypeError(f"expected a share from 0 to 1, got {value!r}")
    return share


def _rate(value: str) -> str:
    try:
        parse_rate(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _schedule(value: str) -> tuple[float, str]:
    # SECONDS=RATE, or SECONDS:RATE (a rate never holds either character).
    at, sep, rate = value.partition("=") if "=" in value else value.partition(":")
    try:
        return float(at), _rate(rate) if sep else _rate("")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected SECONDS=RATE or SECONDS:RATE such as 30=20/minute, got {value!r}"
        ) from None


def _parser() -> argparse.ArgumentParser:
    from .server._counting import MODES  # noqa: PLC0415 - keeps `config` free of server imports

    parser = argparse.ArgumentParser(
        prog="ratelimit-client", description="A rate-limited, retrying httpx transport: simulate, serve, config."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    sim = commands.add_parser("simulate", help="N processes upload through one API key to an emulated rate-limited API")
    sim.add_argument("--workers", type=int, default=15, help="uploader processes (default 15)")
    sim.add_argument(
        "--rate",
        type=_rate,
        default="50/second",
        help="the server's quota per IP+key (default 50/second: the free tier, 60x faster)",
    )
    sim.add_argument("--client-rate", type=_rate, help="the quota the clients are told (default: --rate)")
    sim.add_argument(
        "--client-tier",
        choices=("auto",),
        help="auto: the clients are told no tier; they start at the free tier's 50 per window of --rate "
        "and learn the real quota (discovery allowed)",
    )
    sim.add_argument(
        "--headers",
        choices=("none", "ietf", "x-ratelimit"),
        default="none",
        help="rate-limit headers the server sends (default none: Retry-After on 429s only)",
    )
    sim.add_argument(
        "--schedule",
        type=_schedule,
        action="append",
        default=[],
        metavar="SECONDS:RATE",
        help="from SECONDS into the run the server enforces RATE (repeatable), e.g. 10:100/second",
    )
    sim.add_argument(
        "--adaptive",
        choices=("off", "headers", "full"),
        default="full",
        help="the library's learning: full (default: headers and 429s), headers only, or off",
    )
    sim.add_argument("--discover", action="store_true", help="let the library learn rates above the one it is told")
    sim.add_argument("--duration", type=float, default=10.0, help="seconds of uploading (default 10)")
    sim.add_argument("--mode", choices=MODES, default="gcra", help="how the server counts (default gcra)")
    sim.add_argument("--backend", help="the library's backend URL (default: the configured one)")
    sim.add_argument("--keys", type=int, default=1, help="API keys to spread the workers over")
    sim.add_argument("--ips", type=int, default=1, help="source addresses 127.0.0.1..N to spread the workers over")
    sim.add_argument("--outage", type=_outage, help="cut the server AT seconds in, for SECONDS")
    sim.add_argument("--compare", action="store_true", help="also run httpx+tenacity, aiolimiter, pyrate-limiter")
    sim.add_argument("--plot", metavar="FILE.png", help="draw admitted requests per second (needs matplotlib)")
    sim.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    sim.add_argument("--quiet", action="store_true", help="no live progress")

    srv = commands.add_parser("serve", help="run the emulated rate-limited upload API")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--rate", type=_rate, help="quota for every key (default: the tiers)")
    srv.add_argument("--paid-key", action="append", default=[], metavar="KEY", help="an API key on the paid tier")
    srv.add_argument("--mode", choices=MODES, default="gcra")
    srv.add_argument("--scope", action="append", choices=("ip+key", "key", "ip"), help="identities limited")
    srv.add_argument("--count-rejected", action="store_true", help="refused attempts count against the quota")
    srv.add_argument("--schedule", type=_schedule, action="append", default=[], metavar="SECONDS=RATE")
    srv.add_argument("--headers", choices=("none", "ietf", "x-ratelimit"), default="none")
    srv.add_argument("--fractional-retry-after", action="store_true", help="Retry-After with decimals")
    srv.add_argument("--trusted-proxy", action="append", default=[], metavar="NET")
    srv.add_argument("--max-keys", type=int, default=100_000)
    srv.add_argument("--max-body", type=int, default=64 * 1024 * 1024, metavar="BYTES")
    srv.add_argument("--latency", type=float, default=0.0, metavar="SECONDS")
    srv.add_argument("--error-rate", type=_share, default=0.0, help="share of requests answered 503")
    srv.add_argument("--drop-rate", type=_share, default=0.0, help="share of connections dropped")
    srv.add_argument("--outage", type=_outage, action="append", default=[], metavar="AT:SECONDS")

    cfg = commands.add_parser("config", help="print the effective configuration and where each value came from")
    cfg.add_argument("--config-file", help="a TOML file (default: $RATELIMIT_CLIENT_CONFIG)")
    cfg.add_argument("--json", action="store_true")
    return parser


def main(argv: typing.Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "serve":
            return _serve(args)
        return _config(args)
    except ConfigError as exc:
        print(f"ratelimit-client: {exc}", file=sys.stderr)
        return 2


def _simulate(args: argparse.Namespace) -> int:
    from ._simulate import SimulationConfig, available_kinds, format_table, plot, run_simulation  # noqa: PLC0415

    kinds = available_kinds() if args.compare else ("ratelimit-client",)
    config = SimulationConfig(
        workers=args.workers,
        rate=args.rate,
        client_rate=args.client_rate,
        duration=args.duration,
        mode=args.mode,
        backend=args.backend,
        keys=args.keys,
        ips=args.ips,
        outage=args.outage,
        kinds=kinds,
        headers=args.headers,
        schedule=tuple(args.schedule),
        adaptive=args.adaptive,
        discover=args.discover,
        client_tier=args.client_tier,
    )
    progress = None if args.quiet else sys.stderr
    if progress is not None:
        backend = config.effective_backend
        print(
            f"simulate: {config.workers} processes, {config.keys} key(s), {config.ips} IP(s); server quota "
            f"{config.quota} per IP+key counted by {config.mode}; backend {shown_url(backend)}; {config.duration:g} s",
            file=progress,
        )
        print(
            f"simulate: clients told {parse_rate(config.told)}; adaptive {config.adaptive}"
            f"{', discovery allowed' if config.discovers else ''}; server headers {config.headers}"
            + "".join(f"; from {at:g} s: {rate}" for at, rate in config.schedule),
            file=progress,
        )
        if backend.startswith("memory") and config.workers > 1:
            print("simulate: note: memory:// is per process, so the processes do not share one limit", file=progress)
    summaries = run_simulation(config, progress)
    if args.plot:
        plot(summaries, config.quota.per_second, args.plot)
    if args.json:
        out = {
            "config": _without_password(_jsonable(dataclasses.asdict(config))),
            "runs": [_without_password(s.to_json()) for s in summaries],
        }
        print(json.dumps(out, indent=2))
    else:
        print(format_table(summaries))
        for summary in summaries:
            for error in summary.errors:
                print(f"{summary.kind}: worker error: {error}", file=sys.stderr)
    return 1 if any(s.errors for s in summaries) else 0


def _without_password(record: object) -> object:
    """``record`` with its backend URL as :func:`shown_url` shows it: a Redis URL may hold a password."""
    if isinstance(record, dict) and isinstance(record.get("backend"), str):
        return record | {"backend": shown_url(record["backend"])}
    return record


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _serve(args: argparse.Namespace) -> int:
    import anyio  # noqa: PLC0415

    from .server import Faults, ServerConfig, serve  # noqa: PLC0415

    settings = load_settings()
    tiers: dict[str, typing.Any] = dict(settings.tiers)
    if args.rate:
        tiers = {"default": parse_rate(args.rate)}
    config = ServerConfig(
        tiers=tiers,
        keys=dict.fromkeys(args.paid_key, "paid") if not args.rate else {},
        default_tier="default" if args.rate else settings.tier,
        scopes=tuple(args.scope or ("ip+key",)),
        mode=args.mode,
        count_rejected=args.count_rejected,
        schedule=tuple(args.schedule),
        headers=args.headers,
        retry_after="fractional" if args.fractional_retry_after else "seconds",
        trusted_proxies=tuple(args.trusted_proxy),
        max_keys=args.max_keys,
        max_body=args.max_body,
        faults=Faults(args.latency, args.error_rate, args.drop_rate, tuple(args.outage)),
    )

    def ready(server: typing.Any) -> None:
        print(f"ratelimit-client serve: listening on {server.url} (mode {config.mode})", file=sys.stderr, flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(lambda: serve(config, host=args.host, port=args.port, on_ready=ready, log_level="warning"))
    return 0


def _config(args: argparse.Namespace) -> int:
    settings = load_settings(config_file=args.config_file)
    pacing = pacing_for(settings.quota, burst=settings.burst, server=settings.server_counting)
    rows: list[tuple[str, str, str]] = []
    # Every field, so a setting added later shows up here without touching this command.
    for field in dataclasses.fields(settings):
        if field.name in ("retry", "sources"):
            continue
        value = shown_url(settings.backend) if field.name == "backend" else _show(getattr(settings, field.name))
        rows.append((field.name, value, settings.sources.get(field.name, "default")))
        if field.name == "rate":
            rows.append(("quota", str(settings.quota), "rate" if settings.rate is not None else "tier"))
        if field.name == "server_counting":
            rows.append(("pacing", f"{pacing.rate} burst {pacing.burst}", "quota, burst, server_counting"))
    for field in dataclasses.fields(settings.retry):
        name = f"retry.{field.name}"
        rows.append((name, _show(getattr(settings.retry, field.name)), settings.sources.get(name, "default")))
    if args.json:
        print(json.dumps({name: {"value": value, "source": source} for name, value, source in rows}, indent=2))
        return 0
    width = max(len(name) for name, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    for name, value, source in rows:
        print(f"{name:<{width}}  {value:<{value_width}}  {source}")
    return 0


def _show(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{name}={item}" for name, item in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
