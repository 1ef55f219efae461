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
from ratelimit_client._simulate._report import per_second


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
