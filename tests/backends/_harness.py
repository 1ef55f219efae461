"""Harnesses that open each kind of backend and inspect its storage; a private redis-server."""

from __future__ import annotations

import pathlib
import shutil
import socket
import subprocess
import time
import typing
import uuid

import redis

from ratelimit_client import Backend, MemoryBackend, RedisBackend, SQLiteBackend

T0 = 1_000_000.0  # a fake clock's start: far from zero, like a real epoch


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Harness:
    """Opens backends of one kind that share storage per namespace, and inspects that storage."""

    name: str
    clock: FakeClock | None  # None: the backend keeps its own time (Redis)

    def open(self, namespace: str = "a") -> Backend:
        raise NotImplementedError

    def stored(self, namespace: str = "a") -> int:
        """How many keys the namespace holds."""
        raise NotImplementedError

    def raw(self) -> bytes:
        """Everything stored, as bytes, to search for secrets."""
        raise NotImplementedError

    def advance(self, seconds: float) -> None:
        if self.clock is None:
            time.sleep(seconds)
        else:
            self.clock.now += seconds

    def close(self) -> None:
        pass


class MemoryHarness(Harness):
    name = "memory"

    def __init__(self) -> None:
        self.clock = self._clock = FakeClock()
        self._backends: dict[str, MemoryBackend] = {}

    def open(self, namespace: str = "a") -> Backend:
        # One process's memory: "sharing" is using the same object.
        if namespace not in self._backends:
            self._backends[namespace] = MemoryBackend(clock=self._clock)
        return self._backends[namespace]

    def stored(self, namespace: str = "a") -> int:
        return len(self._backends[namespace]._tats)

    def raw(self) -> bytes:
        return repr({ns: (b._tats, b._holes, b._learned) for ns, b in self._backends.items()}).encode()


class SQLiteHarness(Harness):
    name = "sqlite"

    def __init__(self, path: pathlib.Path) -> None:
        self.clock = self._clock = FakeClock()
        self.path = path
        self._opened: list[SQLiteBackend] = []

    def open(self, namespace: str = "a") -> Backend:
        backend = SQLiteBackend(self.path, namespace=namespace, clock=self._clock)
        self._opened.append(backend)
        return backend

    def stored(self, namespace: str = "a") -> int:
        opened = SQLiteBackend(self.path, namespace=namespace)
        try:
            conn = opened._connection()
            return int(
                conn.execute("SELECT count(*) FROM ratelimit_v1 WHERE namespace = ?", (namespace,)).fetchone()[0]
            )
        finally:
            opened.close()

    def raw(self) -> bytes:
        files = [self.path, self.path.with_name(self.path.name + "-wal")]
        return b"".join(f.read_bytes() for f in files if f.exists())

    def close(self) -> None:
        for backend in self._opened:
            backend.close()


class RedisHarness(Harness):
    name = "redis"
    clock = None

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"test-{uuid.uuid4().hex[:12]}"
        self._opened: list[RedisBackend] = []
        self.client = redis.Redis.from_url(url)

    def namespace(self, namespace: str) -> str:
        return f"{self.prefix}-{namespace}"

    def open(self, namespace: str = "a") -> Backend:
        backend = RedisBackend(self.url, namespace=self.namespace(namespace))
        self._opened.append(backend)
        return backend

    def keys(self, namespace: str = "a") -> list[bytes]:
        return list(self.client.scan_iter(match=f"{{{self.namespace(namespace)}}}:*"))

    def stored(self, namespace: str = "a") -> int:
        return len(self.keys(namespace))

    def raw(self) -> bytes:
        found = list(self.client.scan_iter(match=f"{{{self.prefix}-*"))
        return b"".join(k + b"=" + (self.client.get(k) or b"") for k in found)

    def close(self) -> None:
        for backend in self._opened:
            backend.close()
        found = list(self.client.scan_iter(match=f"{{{self.prefix}-*"))
        if found:
            self.client.delete(*found)
        self.client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of our own on a free port, to stop and start in fault tests."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = directory
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            typing.cast("str", shutil.which("redis-server")),
            "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
            "--dir", str(self._dir), "--enable-debug-command", "yes",
        ]  # fmt: skip
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None
