"""`ratelimit-client simulate`: its arithmetic, and real runs of real processes at a small size."""

from __future__ import annotations

import json
import math
import pathlib
import typing

import pytest

from ratelimit_client import ConfigError
from ratelimit_client._cli import main
from ratelimit_client._simulate import (
    RunSummary,
    SimulationConfig,
    available_kinds,
    format_table,
    jain,
    percentile,
    run_kind,
    utilisation,
)
from ratelimit_client._simulate._report import per_second, quota_at


def test_jain_index() -> None:
    assert jain([5, 5, 5]) == 1.0
    assert jain([9, 0, 0]) == pytest.approx(1 / 3)
    assert jain([0, 0]) == 1.0
    assert math.isnan(jain([]))


def test_percentile_interpolates() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([1, 2, 3, 4], 100) == 4
    assert percentile([7], 99) == 7
    assert math.isnan(percentile([], 50))


def test_utilisation_counts_intervals_per_identity_and_skips_outages() -> None:
    # One identity: 11 requests over 10 s at a quota of 1/s is 100 %.
    events = [(float(t), "admitted", "ip", "k") for t in range(11)]
    assert utilisation(events, 1.0) == pytest.approx(100.0)
    # A second identity at half the rate; refusals do not count.
    events += [(float(t), "admitted", "ip2", "k") for t in range(0, 11, 2)]
    events += [(3.5, "throttled", "ip", "k")]
    assert utilisation(events, 1.0) == pytest.approx(100 * (10 + 5) / 20)
    # Down for 4 s: that time is not quota the clients could use.
    gap = [(float(t), "admitted", "ip", "k") for t in [*range(3), *range(7, 11)]]
    assert utilisation(gap, 1.0, outages=[(2.5, 6.5)]) == pytest.approx(100 * 6 / 6)
    assert utilisation([], 1.0) is None


def test_utilisation_follows_a_changing_quota() -> None:
    # 1/s for 4 s, then 2/s for 4 s: 4 + 8 intervals of capacity, all used.
    events = [(float(t), "admitted", "ip", "k") for t in range(5)]
    events += [(4 + t / 2, "admitted", "ip", "k") for t in range(1, 9)]
    assert utilisation(events, 1.0, schedule=[(4.0, 2.0)]) == pytest.approx(100.0)
    # Down from 2 s to 3 s (quota 1/s) and from 5 s to 6 s (quota 2/s): 3 fewer.
    assert utilisation(events, 1.0, [(2.0, 3.0), (5.0, 6.0)], [(4.0, 2.0)]) == pytest.approx(100 * 12 / 9)
    assert quota_at(3.9, 1.0, [(4.0, 2.0)]) == 1.0
    assert quota_at(4.0, 1.0, [(4.0, 2.0)]) == 2.0


def test_per_second_buckets() -> None:
    events = [
        (0.1, "admitted", "", ""),
        (0.9, "admitted", "", ""),
        (1.5, "throttled", "", ""),
        (2.2, "admitted", "", ""),
    ]
    assert per_second(events, "admitted", 3.0) == (2, 0, 1)
    assert per_second(events, "throttled", 3.0) == (0, 1, 0)


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        SimulationConfig(rate="fast")
    with pytest.raises(ConfigError):
        SimulationConfig(workers=0)
    with pytest.raises(ConfigError):
        SimulationConfig(ips=300)
    with pytest.raises(ConfigError):
        SimulationConfig(kinds=("curl",))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SimulationConfig(headers="draft")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SimulationConfig(schedule=((-1.0, "10/second"),))
    with pytest.raises(ConfigError):
        SimulationConfig(schedule=((1.0, "soon"),))
    with pytest.raises(ConfigError):
        SimulationConfig(adaptive="on")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SimulationConfig(client_tier="auto", client_rate="5/second")


def test_an_unknown_tier_starts_at_the_free_tiers_count_per_window_of_the_quota() -> None:
    config = SimulationConfig(rate="200/second", client_tier="auto")
    assert config.told == "50/1s"
    assert config.discovers
    assert not SimulationConfig().discovers
    assert SimulationConfig(client_rate="9/second").told == "9/second"


def test_table_has_a_row_per_kind() -> None:
    summary = RunSummary(
        kind="ratelimit-client", mode="gcra", workers=2, quota="5/1s", client_rate="5/1s", backend="sqlite://",
        identities=1, delivered=10, lost=0, throttled=0, server_throttled=0, failure_episodes=0,
        utilisation=97.51, jain=1.0, p50=0.2, p99=0.31, wall=2.0, per_worker=(5, 5),
    )  # fmt: skip
    table = format_table([summary])
    assert table.splitlines()[0].split()[:3] == ["client", "delivered", "util"]
    assert table.splitlines()[2].split() == [
        "ratelimit-client",
        "10",
        "97.5",
        "0",
        "0",
        "0",
        "1.000",
        "200",
        "310",
        "2.0",
    ]


def _simulate(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, typing.Any]:
    """The one run's JSON summary."""
    status = main(["simulate", "--json", "--quiet", "--rate", "20/second", *args])
    out = json.loads(capsys.readouterr().out)
    assert status == 0
    (run,) = out["runs"]
    assert run["errors"] == []
    return typing.cast("dict[str, typing.Any]", run)


def test_simulate_end_to_end_no_429s_nothing_lost_and_a_plot(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    png = tmp_path / "admitted.png"
    run = _simulate(capsys, "--workers", "3", "--duration", "3", "--mode", "sliding_log", "--plot", str(png))
    assert run["kind"] == "ratelimit-client"
    assert run["errors"] == []
    assert run["throttled"] == 0
    assert run["server_throttled"] == 0
    assert run["lost"] == 0
    assert run["delivered"] >= 30  # 20/s for 3 s, less start-up
    assert run["utilisation"] >= 90
    assert run["jain"] >= 0.9
    assert sum(run["per_worker"]) == run["delivered"]
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = pytest.importorskip("matplotlib.image").imread(str(png))
    assert image.shape[0] > 100
    assert image.shape[1] > 100


def test_simulate_outage_shows_network_failure_and_loses_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    run = _simulate(capsys, "--workers", "3", "--duration", "4", "--outage", "1.5:1")
    assert run["errors"] == []
    assert run["lost"] == 0
    assert run["throttled"] == 0
    assert run["failure_episodes"] >= 1
    assert run["utilisation"] >= 85


def test_simulate_spreads_workers_over_keys_and_source_addresses(capsys: pytest.CaptureFixture[str]) -> None:
    run = _simulate(capsys, "--workers", "6", "--duration", "2", "--keys", "2", "--ips", "3")
    # Worker i has key i%2 and source address 127.0.0.(1 + i%3): six pairs, only if the
    # addresses were really bound (else the server would see two).
    assert run["identities"] == 6
    assert run["throttled"] == 0
    assert run["lost"] == 0


@pytest.mark.parametrize("kind", [k for k in available_kinds() if k != "ratelimit-client"])
def test_the_alternatives_run_and_overload_the_server(kind: str) -> None:
    config = SimulationConfig(workers=3, duration=2, rate="10/second", mode="sliding_log", kinds=(kind,))  # type: ignore[arg-type]
    summary = run_kind(config, kind, None)  # type: ignore[arg-type]
    assert summary.errors == ()
    assert summary.delivered > 0
    if kind != "pyrate-limiter":
        # No shared limit: three processes at the full quota each draw 429s.
        assert summary.server_throttled > 0


def test_simulate_shows_the_learned_rate_falling_to_the_advertised_quota(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    png = tmp_path / "learned.png"
    # Told 80/second; the server enforces 20/second and says so in IETF headers.
    run = _simulate(
        capsys,
        "--workers",
        "3",
        "--duration",
        "3",
        "--client-rate",
        "80/second",
        "--headers",
        "ietf",
        "--plot",
        str(png),
    )
    assert run["adaptive"] == "full"
    assert run["configured_rate"] == pytest.approx(79.0)
    seconds = len(run["admitted_per_second"])
    assert len(run["learned_min"]) == len(run["learned_mean"]) == len(run["quota_per_second"]) == seconds
    assert run["quota_per_second"] == [20.0] * seconds
    assert run["learned_min"][-1] == pytest.approx(19.0, rel=0.02)  # 20/second paced one under
    assert run["lost"] == 0
    assert png.read_bytes().startswith(b"\x89PNG")


def test_simulate_without_learning_shows_no_learned_rate(capsys: pytest.CaptureFixture[str]) -> None:
    run = _simulate(capsys, "--workers", "2", "--duration", "1", "--adaptive", "off", "--headers", "ietf")
    assert run["adaptive"] == "off"
    assert run["learned_min"] == []
    assert run["learned_mean"] == []


def test_simulate_schedule_counts_from_the_start_of_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    # The quota doubles 1.5 s in; the clients, told 40/second, may not go above it.
    run = _simulate(
        capsys, "--workers", "3", "--duration", "3", "--client-rate", "40/second", "--schedule", "1.5:40/second"
    )
    assert run["quota_per_second"][:2] == [20.0, 20.0]
    assert run["quota_per_second"][2] == 40.0
    assert run["lost"] == 0
    assert run["utilisation"] is not None
