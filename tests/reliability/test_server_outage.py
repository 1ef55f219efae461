"""The emulated server's process dies in the middle of a multi-process run and comes back.

Fifteen worker processes upload through one API key and one SQLite-shared limit; the
server process (``python -m ratelimit_client serve``) is killed, stays down ~2 s and is
started again on the same port. Every upload is delivered and checked, every transport
reports one failure episode, and the workers' first requests after the restart are spread
out by the jittered backoff rather than arriving together.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pathlib
import subprocess
import sys
import time
import typing

import httpx
from backends._harness import free_port

from ratelimit_client import Status
from reliability import _workers

WORKERS = 15
DOWN = 2.0  # seconds the server process stays dead
PROBE_IP = "127.0.0.1"  # this test's own /ping, which the server's limiter counts too
CONTEXT = multiprocessing.get_context("forkserver")


class ServerProcess:
    """``python -m ratelimit_client serve`` on a fixed port, to kill and start again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "ratelimit_client", "serve", "--port", str(self.port), "--rate", "1000/second"]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/ping", timeout=0.5).status_code == 200:
                    return
            assert self._process.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        """Stop the process abruptly, as a crash would: open connections die with it."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None

    def stats(self) -> dict[str, typing.Any]:
        return typing.cast("dict[str, typing.Any]", httpx.get(f"{self.url}/stats?events=1", timeout=5).json())


def _all_back(by_ip: dict[str, dict[str, int]]) -> bool:
    """Every worker has had a few uploads admitted by the restarted server."""
    workers = {ip: row for ip, row in by_ip.items() if ip != PROBE_IP}
    return len(workers) == WORKERS and all(row["admitted"] >= 3 for row in workers.values())


def test_every_upload_survives_a_server_process_outage(tmp_path: pathlib.Path) -> None:
    server = ServerProcess(free_port())
    server.start()
    go, stop, out = CONTEXT.Event(), CONTEXT.Event(), CONTEXT.Queue()
    backend = f"sqlite://{tmp_path / 'outage.sqlite3'}"
    processes = [
        CONTEXT.Process(target=_workers.upload, args=(n, server.url, backend, go, stop, out)) for n in range(WORKERS)
    ]
    for process in processes:
        process.start()
    try:
        assert [out.get(timeout=60) for _ in processes] == ["ready"] * WORKERS
        go.set()
        deadline = time.monotonic() + 30
        while len(server.stats()["by_ip"]) < WORKERS + 1:  # every worker is uploading
            assert time.monotonic() < deadline
            time.sleep(0.1)
        server.kill()
        time.sleep(DOWN)
        server.start()
        # Let every worker come back and deliver a few more before stopping them.
        deadline = time.monotonic() + 30
        while not _all_back(server.stats()["by_ip"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        reports: list[_workers.Report] = [out.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(30)
            assert process.exitcode == 0
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
        out.close()
        out.join_thread()
        after = server.stats()
        server.kill()

    assert len(reports) == WORKERS
    for report in reports:
        # Every upload returned, and returned the server's checksum of exactly what was sent.
        assert report.error is None, report
        assert report.uploads > 0
        assert report.mismatched == 0, report
        # One episode: OK → NETWORK_FAILURE → OK, announced once each way.
        assert report.kinds.count("network_failure") == 1, report
        assert report.kinds.count("recovered") == 1, report
        assert report.kinds.index("network_failure") < report.kinds.index("recovered")
        failing, recovered = report.statuses[report.kinds.index("network_failure")], report.statuses[-1]
        assert (failing, recovered) == (Status.NETWORK_FAILURE.value, Status.OK.value), report
        assert report.final_status == Status.OK.value
        assert set(report.kinds) <= {"network_failure", "retrying", "recovered"}, report
        # No backoff beyond the cap (full jitter draws below it).
        assert report.retry_waits
        assert max(report.retry_waits) <= _workers.POLICY.backoff_max

    # The restarted server's first arrival from each worker: spread out, not one burst.
    first: dict[str, float] = {}
    for at, outcome, ip, _key in after["events"]:
        if outcome == "admitted" and ip != PROBE_IP:
            first.setdefault(ip, at)
    assert sorted(first) == sorted(r.source_ip for r in reports)
    spread = max(first.values()) - min(first.values())
    print(f"first post-outage arrivals of {WORKERS} workers spread over {spread:.3f} s")
    assert spread > 0.010  # not all within the same 10 ms
