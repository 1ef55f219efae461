"""The `ratelimit-client` command: config's sources, argument checks, serve as a real process."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import httpx
import pytest

from ratelimit_client._cli import main


def _config(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, dict[str, str]]:
    assert main(["config", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RATELIMIT_CLIENT_") and name != "RATELIMIT_CLIENT_TEST_REDIS":
            monkeypatch.delenv(name)


def test_config_shows_defaults_with_their_source(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_env(monkeypatch)
    shown = _config(capsys)
    assert shown["tier"] == {"value": "free", "source": "default"}
    assert shown["quota"]["value"] == "50/60s"
    assert shown["pacing"]["value"] == "49/60s burst 1"  # the safe default: one under the quota
    assert shown["retry.throttle_attempts"]["source"] == "default"


def test_config_shows_file_and_environment_sources(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    _clean_env(monkeypatch)
    path = tmp_path / "ratelimit.toml"
    path.write_text('tier = "paid"\nnamespace = "team-a"\n[retry]\nthrottle_attempts = 3\n')
    monkeypatch.setenv("RATELIMIT_CLIENT_NAMESPACE", "from-env")
    shown = _config(capsys, "--config-file", str(path))
    assert shown["tier"] == {"value": "paid", "source": f"file {path}"}
    assert shown["quota"]["value"] == "200/60s"
    assert shown["namespace"] == {"value": "from-env", "source": "environment RATELIMIT_CLIENT_NAMESPACE"}
    assert shown["retry.throttle_attempts"] == {"value": "3", "source": f"file {path}"}


def test_config_as_a_table(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    monkeypatch.setenv("RATELIMIT_CLIENT_RATE", "10/second")
    assert main(["config"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert rows["rate"][1:] == ["10/1s", "environment", "RATELIMIT_CLIENT_RATE"]


def test_an_invalid_setting_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_env(monkeypatch)
    monkeypatch.setenv("RATELIMIT_CLIENT_BURST", "lots")
    assert main(["config"]) == 2
    assert "RATELIMIT_CLIENT_BURST" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "--outage", "soon"],
        ["simulate", "--rate", "fast"],
        ["serve", "--error-rate", "2"],
        ["serve", "--schedule", "10"],
        ["bogus"],
    ],
)
def test_bad_arguments_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_runs_the_emulated_api_as_a_process() -> None:
    port = _free_port()
    command = [sys.executable, "-m", "ratelimit_client", "serve", "--port", str(port), "--rate", "2/minute"]
    command += ["--headers", "ietf"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            assert f"listening on http://127.0.0.1:{port}" in line
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                statuses = [client.post("/upload", content=b"x").status_code for _ in range(3)]
                last = client.post("/upload", content=b"x")
            assert statuses == [200, 200, 429]
            assert last.headers["ratelimit-policy"] == '"default";q=2;w=60'
        finally:
            process.terminate()
            deadline = time.monotonic() + 10
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if process.poll() is None:
                process.kill()


@pytest.mark.parametrize(
    "args",
    [
        ["--headers", "draft"],
        ["--adaptive", "on"],
        ["--client-tier", "paid"],
        ["--schedule", "soon:10/second"],
        ["--schedule", "10"],
    ],
)
def test_simulate_rejects_bad_learning_options(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", *args])
    assert exit_info.value.code == 2
    assert f"argument {args[0]}" in capsys.readouterr().err


def test_simulate_help_documents_the_learning_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    shown = capsys.readouterr().out
    for option in ("--headers", "--schedule", "--adaptive", "--discover", "--client-tier"):
        assert option in shown
