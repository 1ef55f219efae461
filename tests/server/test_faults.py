"""The emulated API over a real loopback server: uploads, stats, and each fault option."""

from __future__ import annotations

import hashlib
import time
import typing

import httpx
import pytest

from ratelimit_client import ConfigError
from ratelimit_client.server import Faults, ServerConfig, background_server

AUTH = {"Authorization": "Bearer secret-key-abc"}


def test_upload_answers_size_and_checksum_and_stats_count_by_key_and_ip() -> None:
    body = bytes(range(256)) * 400
    config = ServerConfig(tiers={"free": "2/minute"})
    with background_server(config) as server, httpx.Client(base_url=server.url) as client:
        answers = [client.post("/upload", content=body, headers=AUTH) for _ in range(3)]
        stats = client.get("/stats").json()
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].json() == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert stats["totals"] == {"admitted": 2, "throttled": 1, "failed": 0}
    assert stats["by_ip"]["127.0.0.1"]["throttled"] == 1
    assert "secret-key-abc" not in str(stats)
    (key_row,) = stats["by_key"].values()
    assert key_row == {"admitted": 2, "throttled": 1, "failed": 0}


def test_ping_and_unknown_paths() -> None:
    with background_server() as server, httpx.Client(base_url=server.url) as client:
        assert client.get("/ping").json() == {"ok": True}
        assert client.get("/nowhere").status_code == 404
        assert client.get("/upload").status_code == 405
        assert client.post("/_control/outage", json={"seconds": 1}).status_code == 404  # control is off


def test_a_body_above_the_limit_gets_413() -> None:
    with background_server(ServerConfig(max_body=1000)) as server, httpx.Client(base_url=server.url) as client:
        assert client.post("/upload", content=b"x" * 1000).status_code == 200
        assert client.post("/upload", content=b"x" * 1001).status_code == 413

        def chunks() -> typing.Iterator[bytes]:
            yield b"x" * 800
            yield b"x" * 800

        assert client.post("/upload", content=chunks()).status_code == 413  # no Content-Length


def test_latency_is_added_to_every_answer() -> None:
    with background_server(ServerConfig(faults=Faults(latency=0.3))) as server, httpx.Client() as client:
        started = time.monotonic()
        assert client.get(f"{server.url}/ping").status_code == 200
        assert time.monotonic() - started >= 0.3  # a lower bound: a sleep never ends early


def test_error_rate_answers_503_and_counts_failures() -> None:
    config = ServerConfig(faults=Faults(error_rate=1.0))
    with background_server(config) as server, httpx.Client(base_url=server.url) as client:
        statuses = [client.post("/upload", content=b"x").status_code for _ in range(5)]
        stats = client.get("/stats").json()
    assert statuses == [503] * 5
    assert stats["totals"]["failed"] == 5


def test_error_rate_is_a_share() -> None:
    config = ServerConfig(tiers={"free": "1000/second"}, faults=Faults(error_rate=0.5, seed=7))
    with background_server(config) as server, httpx.Client(base_url=server.url) as client:
        statuses = [client.get("/ping").status_code for _ in range(200)]
    assert 60 < statuses.count(503) < 140


def test_drop_rate_drops_the_connection_without_a_response() -> None:
    with background_server(ServerConfig(faults=Faults(drop_rate=1.0))) as server, httpx.Client() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(f"{server.url}/upload", content=b"x")
        assert httpx.get(f"{server.url}/stats").json()["totals"]["failed"] == 1


def test_an_outage_refuses_connections_then_the_server_comes_back_on_the_same_port() -> None:
    config = ServerConfig(control=True)
    with background_server(config) as server, httpx.Client(base_url=server.url) as client:
        assert client.get("/ping").status_code == 200  # a kept-alive connection
        client.post("/_control/outage", json={"after": 0, "seconds": 0.5})
        deadline = time.monotonic() + 5
        while server.outages.active() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # let the watcher close the listener
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/ping")  # a new connection is refused
        with pytest.raises(httpx.TransportError):
            client.get("/ping")  # and the open one was dropped
        while server.outages.active() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(100):  # the listener reopens within a watcher tick
            try:
                assert httpx.get(f"{server.url}/ping").status_code == 200
                break
            except httpx.ConnectError:
                time.sleep(0.02)
        else:
            pytest.fail("the server did not come back")


def test_scheduled_outages_from_the_config() -> None:
    config = ServerConfig(faults=Faults(outages=((0.0, 60.0),)))
    with background_server(config) as server:
        time.sleep(0.1)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/ping")


def test_fault_options_are_validated() -> None:
    with pytest.raises(ConfigError):
        Faults(error_rate=1.5)
    with pytest.raises(ConfigError):
        Faults(outages=((1.0, 0.0),))


def test_the_config_repr_never_shows_an_api_key() -> None:
    assert "secret-key-abc" not in repr(ServerConfig(keys={"secret-key-abc": "paid"}))
