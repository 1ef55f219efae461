"""The SQLite file deleted or made read-only under running backends: they carry on or fail
clearly (a BackendError naming the file), and never hang.

A process SIGKILLed inside its transaction is
tests/backends/test_processes.py::test_a_process_killed_inside_its_transaction_does_not_stop_the_others;
a connection switched to ``PRAGMA query_only`` is
tests/backends/test_sqlite.py::test_a_read_only_database_is_named_in_the_error. Here the
file itself changes: unlinked, or made immutable with ``chattr +i`` (permission bits do not
bind root, the immutable flag does). Each backend below has its own connection, as each
process would.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import subprocess
import typing

import httpx
import pytest

from ratelimit_client import BackendError, RateLimitTransport, SQLiteBackend
from ratelimit_client._gcra import Bucket

BUCKET = Bucket(10.0, 1)


def _files(path: pathlib.Path) -> list[pathlib.Path]:
    return [path, path.with_name(path.name + "-wal")]


@contextlib.contextmanager
def immutable(paths: typing.Sequence[pathlib.Path]) -> typing.Iterator[None]:
    """``chattr +i`` on ``paths`` for the block. Not on the ``-shm`` file: SQLite maps it
    into memory, and a write to an immutable mapping kills the process with SIGBUS."""
    chattr = shutil.which("chattr")
    if chattr is None or os.geteuid() != 0:
        message = "needs chattr and root to make a file immutable"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run([chattr, "+i", *map(str, paths)], capture_output=True, check=False)
    if done.returncode != 0:
        message = f"chattr +i is not supported here: {done.stderr.decode().strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", *map(str, paths)], check=True)


def test_an_immutable_file_fails_clearly_then_carries_on(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "limits.sqlite3"
    transport = RateLimitTransport(
        httpx.MockTransport(lambda request: httpx.Response(200)),
        rate="6/minute",  # one every 10 s: a second request would wait, so state is visible
        burst=1,
        server_counting="token_bucket",
        backend=f"sqlite://{path}",
        api_key="k",
        ip="192.0.2.30",
    )
    other = SQLiteBackend(path, namespace="other", busy_timeout=0.5)
    assert other.reserve(["k"], [BUCKET], max_wait=None).wait == 0.0
    with httpx.Client(transport=transport) as client:
        assert client.get("https://api.test/").status_code == 200
        with immutable(_files(path)):
            # Running backends: an error at once, naming the file (no retry loop, no hang).
            with pytest.raises(BackendError) as caught:
                client.get("https://api.test/")
            assert str(path) in str(caught.value)
            with pytest.raises(BackendError) as caught:
                other.reserve(["k"], [BUCKET], max_wait=None)
            assert str(path) in str(caught.value)
            # A process starting now cannot open it for writing either, and says so.
            starting = SQLiteBackend(path)
            with pytest.raises(BackendError, match="readonly") as caught:
                starting.reserve(["k"], [BUCKET], max_wait=None)
            assert str(path) in str(caught.value)
            starting.close()
        # Writable again: both carry on from the state they had (nothing minted meanwhile).
        assert other.reserve(["k"], [BUCKET], max_wait=None).wait == pytest.approx(10.0, abs=0.5)
        limiter = transport._shared.limiter
        keys = limiter.keys("192.0.2.30", limiter.key_id("k"))
        assert transport._shared.backend.reserve(keys, limiter.buckets, max_wait=None).wait > 0
    other.close()


def test_backends_follow_a_deleted_file_to_the_new_one(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "limits.sqlite3"
    first, second = SQLiteBackend(path), SQLiteBackend(path)
    assert first.reserve(["k"], [BUCKET], max_wait=None).wait == 0.0
    for file in path.parent.iterdir():
        file.unlink()
    # The state went with the file (once, like a restart); from now on every backend,
    # running or new, shares the file that is at the path, so the fleet does not split.
    assert second.reserve(["k"], [BUCKET], max_wait=None).wait == 0.0
    assert path.exists()
    assert first.reserve(["k"], [BUCKET], max_wait=None).wait == pytest.approx(10.0, abs=0.5)
    fresh = SQLiteBackend(path)
    assert fresh.reserve(["k"], [BUCKET], max_wait=None).wait == pytest.approx(20.0, abs=0.5)
    for backend in (first, second, fresh):
        backend.close()
