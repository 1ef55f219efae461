"""Harnesses that open each kind of backend and inspect its storage; a private redis-server."""

from __future__ import annotations

import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import typing
import uuid

import redis
import redis.cluster

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
                conn.execute("SELECT count(*) FROM ratelimit_v2 WHERE namespace = ?", (namespace,)).fetchone()[0]
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
    cluster = False

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"test-{uuid.uuid4().hex[:12]}"
        self._opened: list[RedisBackend] = []
        # A cluster client scans, reads and deletes across the nodes with the same calls.
        self.client = (
            typing.cast("redis.Redis", redis.cluster.RedisCluster.from_url(url))
            if self.cluster
            else redis.Redis.from_url(url)
        )

    def namespace(self, namespace: str) -> str:
        return f"{self.prefix}-{namespace}"

    def open(self, namespace: str = "a") -> Backend:
        backend = RedisBackend(self.url, namespace=self.namespace(namespace), cluster=self.cluster)
        self._opened.append(backend)
        # Connected before it is handed out: the first call's set-up (connecting; a cluster
        # client also finds its slots: 0.11 s on a loaded box) would otherwise count as time
        # passing between calls whose waits the tests compare.
        backend.peek("warm-up")
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


class RedisClusterHarness(RedisHarness):
    """Redis through a Redis Cluster of three primaries (:class:`PrivateCluster`)."""

    name = "redis-cluster"
    cluster = True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of our own on a free port, to stop and start in fault tests."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        # It listens on a Unix socket too (short: a socket path has ~100 bytes at most).
        self.socket = pathlib.Path(tempfile.mkdtemp(prefix="rl-")) / "redis.sock"
        self._dir = directory
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            typing.cast("str", shutil.which("redis-server")),
            "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
            "--dir", str(self._dir), "--enable-debug-command", "yes",
            "--unixsocket", str(self.socket), "--unixsocketperm", "700",
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
        self.socket.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop it for good, and remove the socket's folder."""
        self.stop()
        shutil.rmtree(self.socket.parent, ignore_errors=True)


class PrivateCluster:
    """A Redis Cluster of our own: three primaries on free ports, the 16384 slots split
    between them, no replicas (what these tests need; it settles in two to four seconds)."""

    SIZE = 3

    def __init__(self, directory: pathlib.Path) -> None:
        self.ports = [free_port() for _ in range(self.SIZE)]
        # The cluster bus port, free too (by default port + 10000, which may be taken or
        # beyond 65535).
        self._bus_ports = [free_port() for _ in range(self.SIZE)]
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0"
        self._dir = directory
        self._processes: list[subprocess.Popen[bytes]] = []

    def nodes(self) -> list[redis.Redis]:
        """A plain client per node, to inspect one node (INFO, CONFIG RESETSTAT)."""
        return [redis.Redis(port=port) for port in self.ports]

    def start(self) -> None:
        server = typing.cast("str", shutil.which("redis-server"))
        for port, bus_port in zip(self.ports, self._bus_ports, strict=True):
            folder = self._dir / str(port)
            folder.mkdir(parents=True, exist_ok=True)
            command = [
                server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                "--dir", str(folder), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(bus_port), "--enable-debug-command", "local",
            ]  # fmt: skip
            with (folder / "log").open("wb") as log:
                self._processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        nodes = self.nodes()

        def started() -> bool:
            if any(process.poll() is not None for process in self._processes):
                raise RuntimeError(f"a cluster node exited: see the logs in {self._dir}")
            return all(_answers(node) for node in nodes)

        _until(started, f"the cluster's nodes to start (logs in {self._dir})")
        share = 16384 // self.SIZE
        for index, node in enumerate(nodes):
            last = 16383 if index == self.SIZE - 1 else (index + 1) * share - 1
            node.cluster("ADDSLOTS", *range(index * share, last + 1))
        for port, bus_port in zip(self.ports[1:], self._bus_ports[1:], strict=True):
            nodes[0].cluster("MEET", "127.0.0.1", port, bus_port)

        def settled() -> bool:
            # Every node sees every node and the whole slot map, so a client that reads
            # the map from any of them finds every slot covered.
            for node in nodes:
                info = node.cluster("INFO")
                if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != self.SIZE:
                    return False
                if int(info["cluster_slots_assigned"]) != 16384:
                    return False
                slots = node.cluster("SLOTS")
                if len(slots) != self.SIZE:
                    return False
            return True

        _until(settled, "the cluster to settle")
        for node in nodes:
            node.close()

    def stop(self) -> None:
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            process.wait(10)
        self._processes.clear()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def _until(condition: typing.Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)
