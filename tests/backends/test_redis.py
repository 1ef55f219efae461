"""Redis specifics: one command per acquire, NOSCRIPT, key layout and TTLs, faults and fallback."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import struct
import sys
import threading
import time
import typing

import anyio
import httpx
import pytest
import redis
import redis.asyncio.connection
import redis.cluster
import redis.connection
from hypothesis import given
from hypothesis import strategies as st

from backends._harness import PrivateCluster, PrivateRedis
from ratelimit_client import BackendError, ConfigError, Event, FallbackBackend, RateLimitTransport, RedisBackend
from ratelimit_client._backends import backend_from_url, check_url
from ratelimit_client._backends._redis import _PACKED_CACHE_SIZE, _kernel_timeout_connection, _timeval
from ratelimit_client._gcra import Bucket

pytestmark = pytest.mark.redis

BUCKET = Bucket(10.0, 1)


def test_one_command_per_acquire(private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = RedisBackend(private_redis.url, namespace="count")
    backend.reserve(["warm"], [BUCKET], max_wait=None)  # loads the script once
    sent: list[bytes] = []
    send = typing.cast("typing.Callable[..., None]", redis.connection.Connection.send_packed_command)

    def counting(self: redis.connection.Connection, command: typing.Any, check_health: bool = True) -> None:
        sent.append(b"".join(command) if isinstance(command, list) else command)
        send(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    backend.learn("k1", '{"rate": 0.5}', 60.0)
    admin = redis.Redis.from_url(private_redis.url)
    admin.config_resetstat()
    sent.clear()
    learned = [
        backend.reserve([f"k{i}", "shared"], [BUCKET, Bucket(0.001, 1)], max_wait=None).learned for i in range(50)
    ]
    # The learned value rides in the same reply.
    assert learned == [None, '{"rate": 0.5}'] + [None] * 48
    assert_one_evalsha_each(50, sent, admin)
    admin.close()
    backend.close()


def assert_one_evalsha_each(acquires: int, sent: list[bytes], admin: redis.Redis) -> None:
    # Client side: one command per acquire, each an EVALSHA.
    assert len(sent) == acquires
    assert all(b"EVALSHA" in command for command in sent)
    # Server side: as many EVALSHAs; the rest ran inside the script (TIME, GET, SET: no round trips).
    calls = {name: value["calls"] for name, value in admin.info("commandstats").items()}
    assert calls["cmdstat_evalsha"] == acquires
    assert set(calls) <= {"cmdstat_evalsha", "cmdstat_time", "cmdstat_get", "cmdstat_set", "cmdstat_config|resetstat"}


def test_one_command_per_async_acquire(private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    """On asyncio, the same straight path to a pooled connection (trio's calls run the sync
    client in a worker thread, counted above)."""
    sent: list[bytes] = []
    send = redis.asyncio.connection.Connection.send_packed_command

    async def counting(
        self: redis.asyncio.connection.Connection, command: typing.Any, check_health: bool = True
    ) -> None:
        sent.append(b"".join(command) if isinstance(command, list) else command)
        await send(self, command, check_health)

    async def main() -> list[str | None]:
        backend = RedisBackend(private_redis.url, namespace="acount")
        await backend.areserve(["warm"], [BUCKET], max_wait=None)  # loads the script once
        await backend.alearn("k1", '{"rate": 0.5}', 60.0)
        monkeypatch.setattr(redis.asyncio.connection.Connection, "send_packed_command", counting)
        admin.config_resetstat()
        learned = [
            (await backend.areserve([f"k{i}", "shared"], [BUCKET, Bucket(0.001, 1)], max_wait=None)).learned
            for i in range(50)
        ]
        await backend.aclose()
        return learned

    admin = redis.Redis.from_url(private_redis.url)
    assert asyncio.run(main()) == [None, '{"rate": 0.5}'] + [None] * 48
    assert_one_evalsha_each(50, sent, admin)
    admin.close()


def test_the_async_path_reloads_a_flushed_script_and_drops_a_killed_connection(private_redis: PrivateRedis) -> None:
    """As the sync path does; a client holding one connection keeps redis-py's path."""
    admin = redis.Redis.from_url(private_redis.url)

    async def main() -> None:
        pooled = RedisBackend(private_redis.url, namespace="akilled")
        single = RedisBackend(private_redis.url, namespace="asingle", single_connection_client=True)
        for backend in (pooled, single):
            assert (await backend.areserve(["k"], [BUCKET], max_wait=None)).wait == 0.0
            again = await backend.areserve(["k"], [BUCKET], max_wait=None)
            assert again.wait == pytest.approx(10.0, abs=0.1)
            await backend.acancel(again)
        assert pooled._async_client()[2] is not None  # the straight path
        assert single._async_client()[2] is None  # redis-py's
        admin.script_flush()
        assert (await pooled.areserve(["k"], [BUCKET], max_wait=None)).wait == pytest.approx(10.0, abs=0.1)
        admin.client_kill_filter(_type="normal", skipme=True)
        # redis-py's asyncio client retries nothing by default: the first call on a killed
        # connection may fail, as on redis-py's own path. The dead connection is dropped,
        # not pooled again: the next call works.
        with contextlib.suppress(BackendError):
            await pooled.areserve(["k"], [BUCKET], max_wait=None)
        assert (await pooled.areserve(["fresh"], [BUCKET], max_wait=None)).wait == 0.0
        for backend in (pooled, single):
            await backend.aclose()

    asyncio.run(main())
    admin.close()


def test_learn_is_one_set_with_a_ttl_beside_the_bucket_keys(private_redis: PrivateRedis) -> None:
    backend = RedisBackend(private_redis.url, namespace="learn")
    admin = redis.Redis.from_url(private_redis.url)
    backend.learn("k", "x y", 2.5)
    key = backend.learned_key("k")
    assert key.startswith("{learn}:")  # the bucket keys' hash tag: one Cluster slot
    assert key != backend.key("k")
    assert admin.get(key) == b"x y"
    assert 0 < admin.pttl(key) <= 2500
    backend.learn("k", "gone", 0.0)  # nothing left to keep: deleted
    assert admin.get(key) is None
    # A client that decodes replies gets the same reservation.
    decoding = RedisBackend(private_redis.url, namespace="learn", decode_responses=True)
    decoding.learn("k", " two  spaces ", 60.0)
    assert decoding.reserve(["k"], [BUCKET], max_wait=None).learned == " two  spaces "
    assert backend.reserve(["k"], [BUCKET], max_wait=None).learned == " two  spaces "
    assert decoding.peek("k") == backend.peek("k") == " two  spaces "
    admin.close()
    backend.close()
    decoding.close()


def test_learn_goes_to_the_local_bucket_while_degraded() -> None:
    events: list[Event] = []
    backend = FallbackBackend(
        RedisBackend("redis://127.0.0.1:1/0", socket_timeout=0.2),
        probe_interval=60.0,
        emit=lambda e, _: events.append(e),
    )
    backend.learn("k", "local", 60.0)
    assert backend.degraded
    reservation = backend.reserve(["k"], [BUCKET], max_wait=None)
    assert reservation.fallback
    assert reservation.learned == "local"
    assert backend.peek("k") == "local"  # read where it was written while degraded
    assert [e.kind for e in events] == ["backend_degraded"]
    backend.close()


def test_a_flushed_script_is_loaded_again(private_redis: PrivateRedis) -> None:
    backend = RedisBackend(private_redis.url, namespace="noscript")
    assert backend.reserve(["k"], [BUCKET], max_wait=None).wait == 0.0
    backend.client.script_flush()
    assert backend.reserve(["k"], [BUCKET], max_wait=None).wait == pytest.approx(10.0, abs=0.1)
    backend.close()


def test_a_killed_connection_is_replaced_and_a_single_connection_client_works(private_redis: PrivateRedis) -> None:
    """Scripts go straight to a pooled connection: one the server dropped is replaced, as
    with redis-py's own path. A client holding one connection keeps redis-py's path."""
    admin = redis.Redis.from_url(private_redis.url)
    pooled = RedisBackend(private_redis.url, namespace="killed")
    single = RedisBackend(private_redis.url, namespace="single", single_connection_client=True)
    for backend in (pooled, single):
        assert backend.reserve(["k"], [BUCKET], max_wait=None).wait == 0.0
        again = backend.reserve(["k"], [BUCKET], max_wait=None)
        assert again.wait == pytest.approx(10.0, abs=0.1)
        backend.cancel(again)
    admin.client_kill_filter(_type="normal", skipme=True)
    assert pooled.reserve(["k"], [BUCKET], max_wait=None).wait == pytest.approx(10.0, abs=0.1)
    for backend in (pooled, single):
        backend.close()
    admin.close()


def test_packed_commands_are_reused_within_a_bound(private_redis: PrivateRedis) -> None:
    backend = RedisBackend(private_redis.url, namespace="packed")
    first = backend.reserve(["k"], [BUCKET], max_wait=None)
    assert first.wait == 0.0
    # 300 distinct commands, each refused (a wait of 10 s is past every max_wait): a call
    # sent with another call's packed arguments would have been granted.
    refused = [backend.reserve(["k"], [BUCKET], max_wait=5.0 + i / 1000) for i in range(300)]
    assert all(not r.granted and r.wait == pytest.approx(10.0, abs=0.5) for r in refused)
    assert backend.reserve(["k"], [BUCKET], max_wait=None).wait == pytest.approx(10.0, abs=0.5)
    assert 0 < len(backend._packed) <= _PACKED_CACHE_SIZE
    backend.close()


def test_keys_share_one_hash_tag_and_all_expire(private_redis: PrivateRedis) -> None:
    backend = RedisBackend(private_redis.url, namespace="layout")
    backend.reserve(["a", "b"], [BUCKET, Bucket(60.0, 2)], max_wait=None)
    backend.pause(["c"], [BUCKET], 30.0)
    keys = sorted(backend.client.keys("*"))
    assert keys == [b"{layout}:v2:a", b"{layout}:v2:b", b"{layout}:v2:c"]
    ttls = [backend.client.pttl(k) for k in keys]
    # Each lives exactly as long as its state matters: a's tat is 10 s ahead, b's 60 s, c's 30 s.
    assert ttls == [pytest.approx(10_000, abs=200), pytest.approx(60_000, abs=200), pytest.approx(30_000, abs=200)]
    backend.close()


def _socket_of(backend: RedisBackend) -> socket.socket:
    backend.reserve(["k"], [BUCKET], max_wait=None)
    client = backend.client
    assert isinstance(client, redis.Redis)
    connection = client.connection_pool.get_connection()
    client.connection_pool.release(connection)
    return typing.cast("socket.socket", connection._sock)


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel keeps the timeout on Linux only")
def test_the_kernel_keeps_the_sync_clients_timeout(private_redis: PrivateRedis) -> None:
    """No Python timeout (CPython would poll() before each call): SO_RCVTIMEO/SO_SNDTIMEO
    hold it instead. A caller's connection class, or no timeout, is left as it is."""
    kernel = RedisBackend(private_redis.url, namespace="timeouts", socket_timeout=0.25)
    sock = _socket_of(kernel)
    assert sock.gettimeout() is None
    size = len(_timeval(0.25))
    for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
        whole, micros = struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, option, size))
        assert whole + micros / 1e6 == pytest.approx(0.25, abs=0.01)  # the kernel rounds to its tick
    python = RedisBackend(private_redis.url, namespace="timeouts", connection_class=redis.Connection)
    assert _socket_of(python).gettimeout() == 1.0
    none = RedisBackend(private_redis.url, namespace="timeouts", socket_timeout=None)
    assert _socket_of(none).gettimeout() is None
    assert _socket_of(none).getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, size) == bytes(size)
    for backend in (kernel, python, none):
        backend.close()


@given(st.floats(min_value=0.0, max_value=1e6, allow_nan=False))
def test_a_timeval_is_never_shorter_than_asked_nor_zero(seconds: float) -> None:
    whole, micros = struct.unpack("ll", _timeval(seconds))
    assert 0 <= micros < 1_000_000
    total = whole * 1_000_000 + micros
    assert total >= max(1, seconds * 1_000_000 - 1e-3)  # up to float rounding of the product
    assert total <= max(1, seconds * 1_000_000 + 1)


def test_a_kernel_timeout_on_send_is_a_timeout_error() -> None:
    """A server that answers the handshake, then stops reading: the send times out in the
    kernel (EAGAIN), and redis-py's ConnectionError for it becomes a TimeoutError."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    accepted: list[socket.socket] = []

    def serve() -> None:
        server, _ = listener.accept()
        accepted.append(server)
        server.recv(65536)  # HELLO
        server.sendall(b"%1\r\n+proto\r\n:3\r\n")

    # The handshake is HELLO alone: no CLIENT SETINFO (redis-py 8 spells it driver_info).
    quiet = (
        {"driver_info": None}
        if "driver_info" in inspect.signature(redis.connection.AbstractConnection.__init__).parameters
        else {"lib_name": None, "lib_version": None}
    )
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    connection: typing.Any = _kernel_timeout_connection()(  # redis-py's methods are untyped
        kernel_timeout=0.05, host="127.0.0.1", port=listener.getsockname()[1], socket_timeout=None, protocol=3, **quiet
    )
    try:
        connection.connect()
        thread.join()
        with pytest.raises(redis.TimeoutError, match="writing"):
            connection.send_packed_command([b"x" * 50_000_000])  # far more than the socket buffers hold
    finally:
        connection.disconnect()
        for sock in (*accepted, listener):
            sock.close()


def test_a_value_stamped_after_now_is_moved_back_by_the_step(private_redis: PrivateRedis) -> None:
    backend = RedisBackend(private_redis.url, namespace="skew")
    seconds, _ = backend.client.time()
    # Written a day "later" than now: Redis's clock stepped back a day since. The queue
    # keeps its distance from the clock (20 s) instead of being waited out for a day.
    backend.client.set(backend.key("k"), f"{seconds + 86_400 + 20!r} {seconds + 86_400}", px=10_000)
    assert backend.reserve(["k"], [BUCKET], max_wait=None).wait == pytest.approx(20.0, abs=1.0)
    # Values that are not ours (no stamp, no number): no state.
    for text in ("garbage", repr(seconds + 86_400.0), f"{seconds} soon"):
        backend.client.set(backend.key("bad"), text, px=10_000)
        assert backend.reserve(["bad"], [BUCKET], max_wait=None).wait == 0.0
    backend.close()


def test_a_queue_deeper_than_any_horizon_is_kept(private_redis: PrivateRedis) -> None:
    """A queue (or a pause) far ahead of the clock was once taken for a clock step and
    forgotten, so the next caller went at once: twice the rate."""
    backend = RedisBackend(private_redis.url, namespace="deep")
    waits = [backend.reserve(["k"], [BUCKET], max_wait=None).wait for _ in range(200)]
    assert waits[-1] == pytest.approx(199 * BUCKET.interval, abs=1.0)
    backend.pause(["k"], [BUCKET], 5000.0)
    assert backend.reserve(["k"], [BUCKET], max_wait=None).wait >= 5000.0 - 1.0
    backend.close()


def test_urls_pick_fallback_or_fail(redis_url: str) -> None:
    degraded = backend_from_url(f"{redis_url}?probe_interval=0.5", namespace="n")
    assert isinstance(degraded, FallbackBackend)
    assert degraded.probe_interval == 0.5
    degraded.close()
    strict = backend_from_url(f"{redis_url}?fallback=fail", namespace="n")
    assert isinstance(strict, RedisBackend)
    strict.close()
    for scheme in ("rediss://localhost:6380/0", "unix:///run/redis.sock"):
        assert isinstance(backend_from_url(scheme, namespace="n"), FallbackBackend)
    with pytest.raises(ConfigError, match="fallback"):
        check_url("redis://localhost?fallback=sometimes")


def test_a_unix_socket_url_reaches_the_same_server(private_redis: PrivateRedis) -> None:
    over_socket = backend_from_url(f"unix://{private_redis.socket}?fallback=fail", namespace="unix")
    assert isinstance(over_socket, RedisBackend)
    over_tcp = RedisBackend(private_redis.url, namespace="unix")
    bucket = Bucket(10.0, 1)
    assert over_socket.reserve(["k"], [bucket], max_wait=None).wait == 0.0
    # One bucket, whichever way a process reaches the server.
    assert over_tcp.reserve(["k"], [bucket], max_wait=None).wait == pytest.approx(10.0, abs=0.1)
    client = over_socket.client
    assert isinstance(client, redis.Redis)
    assert client.connection_pool.connection_kwargs["path"] == str(private_redis.socket)
    over_socket.close()
    over_tcp.close()


# --- Redis Cluster (the conformance suite runs on it too) --------------------------------


def test_a_cluster_spreads_namespaces_over_its_nodes_and_keeps_each_call_on_one(
    redis_cluster: PrivateCluster,
) -> None:
    namespaces = [f"spread-{i}" for i in range(12)]
    backends = [RedisBackend(redis_cluster.url, namespace=n, cluster=True) for n in namespaces]
    for backend in backends:
        backend.learn("ip", "{}", 60.0)
        # Two limits (per IP and key, per key): one script, its three keys on one node.
        backend.reserve(["ip", "key"], [Bucket(1.0, 1), Bucket(0.5, 1)], max_wait=None)
    holders: dict[str, set[int]] = {n: set() for n in namespaces}
    for port, node in zip(redis_cluster.ports, redis_cluster.nodes(), strict=True):
        for key in node.scan_iter(match="{spread-*}:*"):
            holders[key.decode().split("}", 1)[0][1:]].add(port)
        node.close()
    assert all(len(ports) == 1 for ports in holders.values()), holders
    assert len(set().union(*holders.values())) > 1  # the namespaces landed on several nodes
    for backend in backends:
        backend.client.delete(*(backend.key(k) for k in ("ip", "key")), backend.learned_key("ip"))
        backend.close()


def test_one_command_per_acquire_on_a_cluster(redis_cluster: PrivateCluster) -> None:
    backend = RedisBackend(redis_cluster.url, namespace="count-cluster", cluster=True)
    backend.reserve(["warm"], [BUCKET], max_wait=None)  # reads the slot map, loads the script
    nodes = redis_cluster.nodes()
    for node in nodes:
        node.config_resetstat()
    for i in range(50):
        backend.reserve([f"k{i}", "shared"], [BUCKET, Bucket(0.001, 1)], max_wait=None)
    calls: dict[str, int] = {}
    for node in nodes:
        for name, value in node.info("commandstats").items():
            calls[name] = calls.get(name, 0) + value["calls"]
        node.close()
    assert calls["cmdstat_evalsha"] == 50
    assert set(calls) <= {"cmdstat_evalsha", "cmdstat_time", "cmdstat_get", "cmdstat_set", "cmdstat_config|resetstat"}
    backend.close()


def test_a_cluster_sends_each_script_once_even_to_a_busy_node(redis_cluster: PrivateCluster) -> None:
    """redis-py's cluster client retried a call that timed out: every copy ran once the
    node was free again, so one reserve took several slots (and a hung node held the
    caller for ~30 timeouts)."""
    backend = RedisBackend(redis_cluster.url, namespace=f"busy-{time.monotonic_ns()}", socket_timeout=0.2, cluster=True)
    assert backend.reserve(["k"], [BUCKET], max_wait=None).wait == 0  # the free slot
    client = backend.client
    assert isinstance(client, redis.cluster.RedisCluster)
    owner = client.get_node_from_key(backend.key("k"))  # type: ignore[no-untyped-call]  # untyped in redis-py
    node = redis.Redis(port=int(owner.port))
    busy = threading.Thread(target=node.execute_command, args=("DEBUG", "SLEEP", "0.6"))
    busy.start()
    time.sleep(0.05)
    try:
        with pytest.raises(BackendError):
            backend.reserve(["k"], [BUCKET], max_wait=None)
    finally:
        busy.join()
        node.close()
    # The timed-out call still ran when the node was free (a sent script cannot be taken
    # back), so one slot is queued ahead of this one, not two or more.
    third = backend.reserve(["k"], [BUCKET], max_wait=None)
    assert BUCKET.interval < third.wait <= 2 * BUCKET.interval
    backend.close()


def test_a_cluster_url_builds_a_cluster_backend(redis_cluster: PrivateCluster) -> None:
    backend = backend_from_url(f"{redis_cluster.url}?cluster=true&fallback=fail", namespace="url-cluster")
    assert isinstance(backend, RedisBackend)
    assert isinstance(backend.client, redis.cluster.RedisCluster)
    assert "cluster" in repr(backend)
    assert backend.reserve(["k"], [BUCKET], max_wait=None).granted
    backend.client.delete(backend.key("k"))
    backend.close()
    wrapped = backend_from_url(f"{redis_cluster.url}?cluster=true", namespace="url-cluster")
    assert isinstance(wrapped, FallbackBackend)
    assert isinstance(wrapped.primary, RedisBackend)
    wrapped.close()


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("redis://127.0.0.1:7000/0?cluster=maybe", "backend cluster"),
        ("unix:///run/redis.sock?cluster=true", "backend"),
    ],
)
def test_bad_cluster_urls_are_config_errors(url: str, field: str) -> None:
    with pytest.raises(ConfigError, match=r"redis://|true or false") as caught:
        check_url(url)
    assert caught.value.field == field


def test_a_cluster_down_at_start_up_falls_back_instead_of_failing_to_start() -> None:
    events: list[Event] = []
    transport = RateLimitTransport(
        httpx.MockTransport(lambda request: httpx.Response(200)),
        backend="redis://127.0.0.1:1/0?cluster=true&probe_interval=60",
        api_key="k",
        ip="192.0.2.10",
        on_event=events.append,
    )
    with httpx.Client(transport=transport) as client:
        assert client.get("https://api.test/").status_code == 200
    assert [e.kind for e in events] == ["backend_degraded"]
    assert "127.0.0.1:1" in (events[0].reason or "")
    strict = RedisBackend("redis://127.0.0.1:1/0", namespace="n", cluster=True)
    with pytest.raises(BackendError, match=r"127\.0\.0\.1:1"):
        strict.reserve(["k"], [BUCKET], max_wait=None)
    strict.close()


def test_fail_mode_raises_a_backend_error_without_the_password() -> None:
    backend = backend_from_url("redis://user:hunter2@127.0.0.1:1/0?fallback=fail", namespace="n")
    with pytest.raises(BackendError, match="Redis backend") as caught:
        backend.reserve(["k"], [BUCKET], max_wait=None)
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(backend)
    backend.close()


def test_requests_flow_on_the_fallback_while_redis_is_down(private_redis: PrivateRedis) -> None:
    """Redis stops mid-run: requests keep going on the local bucket, an event says so, and
    once Redis is back the transport uses it again."""
    events: list[Event] = []
    transport = RateLimitTransport(
        httpx.MockTransport(lambda request: httpx.Response(200)),
        rate="1/minute",  # state that lives a minute: there is something to look for
        burst=1000,
        server_counting="token_bucket",
        backend=f"{private_redis.url}?probe_interval=0.05",
        namespace="fault",
        api_key="k",
        ip="192.0.2.9",
        on_event=events.append,
    )
    backend = transport._shared.backend
    assert isinstance(backend, FallbackBackend)
    admin = redis.Redis.from_url(private_redis.url)
    with httpx.Client(transport=transport) as client:
        assert client.get("https://api.test/").status_code == 200
        assert admin.keys("{fault}:*")
        private_redis.stop()
        statuses = [client.get("https://api.test/").status_code for _ in range(20)]
        assert statuses == [200] * 20
        assert backend.degraded
        assert [e.kind for e in events] == ["backend_degraded"]
        private_redis.start()  # a fresh, empty server on the same port
        deadline = time.monotonic() + 10
        while backend.degraded and time.monotonic() < deadline:
            assert client.get("https://api.test/").status_code == 200
            time.sleep(0.02)
        assert [e.kind for e in events] == ["backend_degraded", "backend_restored"]
        assert client.get("https://api.test/").status_code == 200
        assert admin.keys("{fault}:*")  # state lives in Redis again
    admin.close()


@pytest.mark.anyio
async def test_a_cancelled_round_trip_keeps_the_connection_in_step(
    private_redis: PrivateRedis, anyio_backend: str
) -> None:
    """Cancelled while Redis is busy: the reply is still read (so the next call on that
    connection gets its own reply), and the engine gives the slot back."""
    backend = RedisBackend(private_redis.url, namespace="cancel")
    bucket = Bucket(10.0, 1)
    await backend.areserve(["warm"], [bucket], max_wait=None)
    admin = redis.Redis.from_url(private_redis.url)
    blocker = threading.Thread(target=admin.execute_command, args=("DEBUG", "SLEEP", "0.3"))
    blocker.start()
    await anyio.sleep(0.05)  # the server is now busy for 0.25 s more
    got: list[typing.Any] = []
    with anyio.move_on_after(0.05):
        got.append(await backend.areserve(["k"], [bucket], max_wait=None))
    blocker.join()
    # The call ran to its end: on trio the caller has its reservation to give back; on
    # asyncio the cancelled call gave it back itself before raising.
    assert len(got) == (1 if anyio_backend == "trio" else 0)
    for reservation in got:
        await backend.acancel(reservation)
    nxt = await backend.areserve(["k"], [bucket], max_wait=None)
    assert nxt.keys == ("k",)
    assert nxt.wait == 0.0
    await backend.aclose()
    admin.close()


def test_fail_mode_surfaces_through_the_transport() -> None:
    transport = RateLimitTransport(
        httpx.MockTransport(lambda request: httpx.Response(200)),
        backend="redis://127.0.0.1:1/0?fallback=fail",
        api_key="k",
        ip="192.0.2.10",
    )
    with httpx.Client(transport=transport) as client, pytest.raises(BackendError, match=r"127\.0\.0\.1:1"):
        client.get("https://api.test/")


@pytest.mark.anyio
async def test_the_async_path_falls_back_and_comes_back(private_redis: PrivateRedis) -> None:
    events: list[str] = []
    backend = FallbackBackend(
        RedisBackend(private_redis.url, namespace="afault"),
        probe_interval=0.0,
        emit=lambda event, level: events.append(event.kind),
    )
    bucket = Bucket(10.0, 1)
    assert not (await backend.areserve(["k"], [bucket], max_wait=None)).fallback
    private_redis.stop()
    local = await backend.areserve(["k"], [bucket], max_wait=None)
    assert local.fallback
    assert local.wait == 0.0  # a fresh local bucket: this process alone
    await backend.acancel(local)  # goes back to the local bucket, not to Redis
    assert events == ["backend_degraded"]
    private_redis.start()
    # Redis is empty after the restart: the first answer from it is a fresh bucket.
    back = await backend.areserve(["k"], [bucket], max_wait=None)
    assert not back.fallback
    assert events == ["backend_degraded", "backend_restored"]
    await backend.aclose()
