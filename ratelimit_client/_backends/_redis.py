"""Redis backend: one bucket per key shared by every process on every host using the server.

Each operation is one Lua script (one ``EVALSHA``, reloaded after ``NOSCRIPT``) that
runs the GCRA step of :mod:`.._gcra` on the server's own ``TIME``, so hosts with
skewed clocks still share one bucket. Keys are ``{namespace}:v2:<key>``, and
``{namespace}:learned:v1:<key>`` for what :meth:`RedisBackend.learn` stored (read by the
same reserve script): the hash tag puts a namespace in one Cluster slot, so a script's
keys always sit on one node, and with ``cluster=True`` redis-py's cluster clients send each
script to the node that holds its slot. Each key's TTL ends when its state stops mattering.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import inspect
import math
import socket
import struct
import sys
import threading
import typing
import urllib.parse
import weakref

import anyio
import anyio.to_thread
import sniffio

from .._events import redact_url
from .._exceptions import BackendError, ConfigError
from .._gcra import MAX_HOLES
from ._base import Reservation, spend
from ._to_end import run_to_end

if typing.TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster
    import redis.commands.core

    from .._gcra import Bucket

__all__ = ["RedisBackend"]

# The server's clock, read once per script: hosts with skewed clocks share one bucket.
# Its whole seconds, as TIME gives them, are the stamp each stored value carries (see
# _gcra: a value stamped after now shows the clock stepped back).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local stamp = t[1]
"""

# The state codec and the pure steps, mirroring _gcra.py line for line (the conformance
# tests hold them to the same answers). A value is "tat stamp", then (written, before)
# per hole. Times are written with %.17g, which round-trips a double exactly: cancel
# compares them for equality.
_CODEC = """
local function fmt(x) return string.format('%.17g', x) end
local function parse(v)
  if not v then return nil end
  local n, first = {}, nil
  for tok in string.gmatch(v, '%S+') do n[#n + 1] = tonumber(tok); first = first or tok end
  local holes = {}
  for i = 3, #n - 1, 2 do holes[#holes + 1] = {n[i], n[i + 1]} end
  -- ``text`` is the tat as stored, handed back to the client as is (formatting costs
  -- ~1 µs a number).
  return {tat = n[1], stamp = n[2], holes = holes, text = first}
end
local function fresh(s, now)
  -- No tat, a NaN, or no stamp: not a value of ours (a corrupt one), so no state.
  if s == nil or s.tat == nil or s.tat ~= s.tat or s.stamp == nil then return nil end
  local step = s.stamp - now
  if step > 0 then
    -- The clock stepped back since the value was written: move its times back with it.
    if step == math.huge then return nil end
    s.tat = s.tat - step
    for _, h in ipairs(s.holes) do h[1] = h[1] - step; h[2] = h[2] - step end
    s.text = fmt(s.tat)
  end
  return s
end
local function live(holes, now)
  if #holes == 0 then return holes end
  local out = {}
  for _, h in ipairs(holes) do if h[1] > now then out[#out + 1] = h end end
  return out
end
local function store(key, tat, holes, now)
  local text = fmt(tat)
  local last = tat
  local parts = {text, stamp}
  for _, h in ipairs(holes) do
    parts[#parts + 1] = fmt(h[1]); parts[#parts + 1] = fmt(h[2])
    if h[1] > last then last = h[1] end
  end
  -- Once every stored time has passed the key means "full bucket": let it expire.
  local ttl = math.ceil((last - now) * 1000) + 1
  if ttl <= 1 then redis.call('DEL', key) else redis.call('SET', key, table.concat(parts, ' '), 'PX', ttl) end
  return text
end
"""

# cancel and pause: the codec as is.
_PRELUDE = _NOW + _CODEC + "local function load(key) return fresh(parse(redis.call('GET', key)), now) end\n"

# KEYS: the bucket keys, then the learned key of the first. ARGV: max_wait ('' = none),
# then interval and lead per bucket key (see _gcra.Bucket.lead).
#
# reserve runs on every request, so its common case (keys without holes, the clock not
# stepped back) is the codec's steps written out on plain locals: no closures, no per-key
# tables, no tokenizer, one %.17g per key (~1 µs each in Redis's Lua). Only a key holding
# holes, or written before a step back of the clock, builds the codec (codec(): the
# codec's functions, made on demand) and goes through parse/fresh/live/store.
_CODEC_ON_DEMAND = "local function codec()\n" + _CODEC + "return parse, fresh, live, store\nend\n"
_RESERVE = """
local max_wait, n = tonumber(ARGV[1]), #KEYS - 1
local first = redis.call('GET', KEYS[1])
local a = first and string.find(first, ' ', 1, true)
-- tonumber() of what follows the tat is nil when holes follow it too.
local stamped = a and tonumber(string.sub(first, a + 1))
if n == 1 and not (a and not (stamped and stamped <= now)) then
  -- One key holding a tat and its stamp, stamped at or before now, and no holes; or
  -- nothing of ours: the loop below for n = 1, with no closures or tables and the reply
  -- made in one concatenation (~2 µs less per acquire in Redis's Lua).
  local tat, before_text = nil, nil
  if a then
    before_text = string.sub(first, 1, a - 1)
    tat = tonumber(before_text)
    if tat ~= tat then tat = nil end
  end
  local from = now
  if tat then from = math.max(tat, now) end
  local slot = math.max(now, from - tonumber(ARGV[3]))
  local wait = slot - now
  if max_wait and wait > max_wait then return '0 ' .. tostring(wait) end
  local before = tat
  if not tat then before, before_text = now, string.format('%.17g', now) end
  local written = math.max(before, slot) + tonumber(ARGV[2])
  local written_text = string.format('%.17g', written)
  local ttl = math.ceil((written - now) * 1000) + 1
  if ttl <= 1 then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], written_text .. ' ' .. stamp, 'PX', ttl)
  end
  local head = '1 0 '
  if wait ~= 0 then head = '1 ' .. tostring(wait) .. ' ' end
  local learned = redis.call('GET', KEYS[2])
  if learned then return head .. written_text .. ' ' .. before_text .. ' =' .. learned end
  return head .. written_text .. ' ' .. before_text
end
-- One value's tat (nil: none or not usable), its text and its holes (nil: none), read
-- without the codec when it holds no holes and was written at or before now.
local parse, fresh, live, store
local function read(v)
  local a = v and string.find(v, ' ', 1, true)
  if not a then return nil end  -- nothing stored, or no stamp: not a value of ours
  local b = string.find(v, ' ', a + 1, true)
  local stamped = tonumber(string.sub(v, a + 1, b and b - 1 or -1))
  if not stamped then return nil end
  if b or stamped > now then
    if not parse then parse, fresh, live, store = codec() end
    local s = fresh(parse(v), now)
    if s then return s.tat, s.text, s.holes end
    return nil
  end
  local text = string.sub(v, 1, a - 1)
  local tat = tonumber(text)
  if tat ~= tat then return nil end
  return tat, text, nil
end
local function write(key, tat, holes)
  if holes and #holes > 0 then return store(key, tat, live(holes, now), now) end
  local text = string.format('%.17g', tat)
  local ttl = math.ceil((tat - now) * 1000) + 1
  if ttl <= 1 then redis.call('DEL', key) else redis.call('SET', key, text .. ' ' .. stamp, 'PX', ttl) end
  return text
end
local tats, texts, holeses, slot = {}, {}, {}, now
for i = 1, n do
  local v = first
  if i > 1 then v = redis.call('GET', KEYS[i]) end
  local tat, text, holes = read(v)
  tats[i], texts[i], holeses[i] = tat, text, holes
  local from = now
  if tat then from = math.max(tat, now) end
  slot = math.max(slot, from - tonumber(ARGV[1 + 2 * i]))
end
local wait = slot - now
-- The wait is only compared, never matched: tostring's 14 digits are plenty, and the
-- common wait of 0 needs no formatting at all.
if max_wait and wait > max_wait then return '0 ' .. tostring(wait) end
-- One string, not an array: the client parses one reply instead of 2 + 2n.
local reply = '1 0'
if wait ~= 0 then reply = '1 ' .. tostring(wait) end
for i = 1, n do
  local before, before_text = tats[i], texts[i]
  if not before then before, before_text = now, string.format('%.17g', now) end
  local written_text = write(KEYS[i], math.max(before, slot) + tonumber(ARGV[2 * i]), holeses[i])
  reply = reply .. ' ' .. written_text .. ' ' .. before_text
end
-- The learned value (any text, spaces too) goes last, marked by '=': the client splits
-- off the 2 + 2n numbers and keeps the rest as it is.
local learned = redis.call('GET', KEYS[n + 1])
if learned then reply = reply .. ' =' .. learned end
return reply
"""

# ARGV: max_holes, then (written, before) per key.
_CANCEL = """
local max_holes = tonumber(ARGV[1])
for i = 1, #KEYS do
  local s = load(KEYS[i])
  if s and s.tat then
    local written, before = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
    if s.tat ~= written then
      local holes = s.holes
      holes[#holes + 1] = {written, before}
      holes = live(holes, now)
      local kept = {}
      for j = math.max(1, #holes - max_holes + 1), #holes do kept[#kept + 1] = holes[j] end
      store(KEYS[i], s.tat, kept, now)
    else
      -- The reservations behind this one that were cancelled earlier go too.
      local order, earlier = {}, {}
      for _, h in ipairs(s.holes) do
        if earlier[h[1]] == nil then order[#order + 1] = h[1] end
        earlier[h[1]] = h[2]
      end
      local tat = before
      while earlier[tat] ~= nil do
        local prev = earlier[tat]
        earlier[tat] = nil
        tat = prev
      end
      local holes = {}
      for _, w in ipairs(order) do if earlier[w] ~= nil then holes[#holes + 1] = {w, earlier[w]} end end
      store(KEYS[i], tat, live(holes, now), now)
    end
  end
end
return 1
"""

# ARGV: seconds, then interval and lead per key.
_PAUSE = """
local till = now + tonumber(ARGV[1])
for i = 1, #KEYS do
  local floor = till + tonumber(ARGV[1 + 2 * i])
  local s = load(KEYS[i])
  if s == nil then store(KEYS[i], math.max(floor, now), {}, now)
  elseif s.tat >= floor then
    -- One ulp above the queue's tat (math.nextafter): no pending charge matches it, so
    -- cancelling the queue cannot roll the tat back under the pause.
    local _, e = math.frexp(s.tat)
    store(KEYS[i], s.tat + math.ldexp(1, e - 53), {}, now)
  else store(KEYS[i], floor, {}, now) end
end
return 1
"""

SCRIPTS = {"reserve": _NOW + _CODEC_ON_DEMAND + _RESERVE, "cancel": _PRELUDE + _CANCEL, "pause": _PRELUDE + _PAUSE}

Call = tuple[str, list[str], list[str]]  # script name (or "learn"/"peek": a plain SET/GET), KEYS, ARGV


def _without_cluster_retries(options: dict[str, typing.Any], retry: typing.Any) -> dict[str, typing.Any]:
    """``options`` for a cluster client that sends each script once, unless the caller chose."""
    # redis-py's cluster client retries a failed command (three times by default), also
    # one that reached its node: a reserve sent twice takes two slots, and a hung node
    # holds the caller for some thirty socket timeouts. One try; the fallback takes over.
    if {"retry", "cluster_error_retry_attempts"} & options.keys():
        return options
    from redis.backoff import NoBackoff  # noqa: PLC0415 - an optional extra

    return {**options, "retry": retry(NoBackoff(), 0)}


@functools.lru_cache(maxsize=256)
def _bucket_args(buckets: tuple[Bucket, ...]) -> tuple[str, ...]:
    """Each bucket's interval and lead (cached: a transport reuses the same few buckets).
    repr() is exact: the script computes with the model's doubles."""
    return tuple(repr(x) for b in buckets for x in (b.interval, b.lead))


@functools.lru_cache(maxsize=256)
def _reserve_layout(
    prefix: str, learned_prefix: str, keys: tuple[str, ...], buckets: tuple[Bucket, ...]
) -> tuple[list[str], tuple[str, ...]]:
    """reserve's KEYS, and its ARGV after max_wait (cached: a transport reuses the same few
    keys; the list is only read, never changed)."""
    return [*(prefix + k for k in keys), learned_prefix + keys[0]], _bucket_args(buckets)


def _timeval(seconds: float) -> bytes:
    """``struct timeval`` for ``SO_RCVTIMEO``/``SO_SNDTIMEO``: rounded up to whole
    microseconds and at least one, since the kernel reads zero as "no timeout"."""
    usec = max(1, math.ceil(seconds * 1_000_000))
    return struct.pack("ll", usec // 1_000_000, usec % 1_000_000)


def _timed_out(exc: BaseException) -> bool:
    """Whether redis-py's error came from a kernel socket timeout (EAGAIN on a blocking socket)."""
    cause = exc.__cause__ or exc.__context__
    return isinstance(cause, OSError) and cause.errno in (errno.EAGAIN, errno.EWOULDBLOCK)


@functools.cache
def _kernel_timeout_connection() -> type[redis.Connection]:
    """A TCP connection whose timeout the kernel keeps (``SO_RCVTIMEO``, ``SO_SNDTIMEO``)
    on a blocking socket, so CPython sends and receives without the ``poll()`` it runs
    before each call on a socket with a Python timeout.

    A call the kernel times out fails with ``EAGAIN``, which redis-py reports as a
    :class:`redis.ConnectionError`; it is raised as :class:`redis.TimeoutError`, as a
    Python timeout would be. redis-py drops the connection either way, so a late reply
    is never read by the next call. The timeout bounds each send and receive, not a
    whole ``sendall``; our commands are far smaller than a socket's send buffer.
    """
    import redis  # noqa: PLC0415 - an optional extra

    class KernelTimeoutConnection(redis.Connection):
        def __init__(self, *, kernel_timeout: float, **kwargs: typing.Any) -> None:
            self._timeval = _timeval(kernel_timeout)
            super().__init__(**kwargs)  # type: ignore[no-untyped-call]  # redis-py leaves these untyped

        def _connect(self) -> socket.socket:
            # Blocking: this class runs with socket_timeout=None.
            sock: socket.socket = super()._connect()  # type: ignore[no-untyped-call]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, self._timeval)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self._timeval)
            return sock

        def send_packed_command(self, command: typing.Any, check_health: bool = True) -> None:
            try:
                super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]
            except redis.ConnectionError as exc:
                if _timed_out(exc):
                    raise redis.TimeoutError("Timeout writing to socket") from exc
                raise

        def read_response(self, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
            try:
                return super().read_response(*args, **kwargs)
            except redis.ConnectionError as exc:
                if _timed_out(exc):
                    raise redis.TimeoutError("Timeout reading from socket") from exc
                raise

    return KernelTimeoutConnection


# A client's registered scripts by name: redis-py's Script or AsyncScript.
_Scripts = dict[str, typing.Any]

# Packed EVALSHAs kept per backend; past this many (max_wait varying call to call) the
# cache starts over.
_PACKED_CACHE_SIZE = 256


class RedisBackend:
    """Limiter state in Redis, shared by every host using the server::

        backend = RedisBackend("redis://127.0.0.1:6379/0", namespace="uploads")

    The sync methods use a :class:`redis.Redis` client; the async ones a
    :class:`redis.asyncio.Redis` client per event loop on asyncio, and the sync client in
    a worker thread on trio (redis-py has no trio client). Errors (unreachable, timeout,
    refused) raise :class:`BackendError`; wrap in :class:`FallbackBackend` to keep going.
    ``socket_timeout`` (seconds, also for connecting) bounds how long a hung server can
    hold a request before that happens (on Linux the kernel keeps it for the sync client
    of a ``redis://`` URL, which spares a ``poll()`` per call); other keywords go to
    :meth:`redis.Redis.from_url`.

    ``cluster=True`` talks to a Redis Cluster through any of its nodes (redis-py's
    :class:`~redis.cluster.RedisCluster` clients): each call's keys share one hash tag, so
    one slot and one node. The cluster client connects on first use, so a cluster that is
    down at start-up is a :class:`BackendError` there, as for a single server.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "ratelimit-client",
        socket_timeout: float | None = 1.0,
        cluster: bool = False,
        **client_options: typing.Any,
    ) -> None:
        try:
            import redis  # noqa: PLC0415 - an optional extra
        except ImportError:  # pragma: no cover - redis is installed in the test environment
            raise ConfigError(
                "backend", redact_url(url), "redis-py installed: pip install 'ratelimit-client[redis]'"
            ) from None
        self.namespace = namespace
        self._url = url
        self._cluster = cluster
        self._options = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout, **client_options}
        self._prefix = f"{{{namespace}}}:v2:"
        self._learned_prefix = f"{{{namespace}}}:learned:v1:"
        self._packed: dict[tuple[object, ...], typing.Any] = {}
        self._noscript = redis.exceptions.NoScriptError
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[typing.Any, _Scripts, typing.Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._connecting = threading.Lock()
        self._client: redis.Redis | redis.cluster.RedisCluster | None = None
        self._scripts: _Scripts = {}
        self._pool: redis.ConnectionPool | None = None  # a single server's, for _evalsha
        if cluster:
            # The cluster client is made on first use (see _sync_client): redis-py's reads
            # the slot map from the nodes as it is made, and a cluster that is down now must
            # not stop the transport from starting on its fallback. The URL is checked now.
            if urllib.parse.urlsplit(url).scheme not in ("redis", "rediss"):
                raise ConfigError("backend", redact_url(url), "a redis:// or rediss:// URL for a Redis Cluster")
            try:
                redis.connection.parse_url(url)  # type: ignore[no-untyped-call]  # untyped in redis-py
            except (ValueError, TypeError) as exc:
                raise ConfigError("backend", redact_url(url), f"a valid Redis URL ({exc})") from None
        else:
            self._client = client = self._single_server_client(url, socket_timeout, client_options)
            self._scripts = {name: client.register_script(text) for name, text in SCRIPTS.items()}
            self._pool = _direct_pool(client)

    def _single_server_client(
        self, url: str, socket_timeout: float | None, client_options: typing.Mapping[str, typing.Any]
    ) -> redis.Redis:
        import redis  # noqa: PLC0415 - an optional extra

        options = self._options
        # Plain TCP on Linux, with no connection settings of the caller's: the kernel keeps
        # the sync client's timeout (see _kernel_timeout_connection). TLS, Unix sockets and
        # the asyncio client keep Python's.
        if (
            socket_timeout is not None
            and sys.platform == "linux"
            and urllib.parse.urlsplit(url).scheme == "redis"
            and not {"connection_class", "connection_pool"} & client_options.keys()
        ):
            options = {
                **self._options,
                "socket_timeout": None,
                "connection_class": _kernel_timeout_connection(),
                "kernel_timeout": socket_timeout,
            }
        try:
            return redis.Redis.from_url(url, **options)
        except (ValueError, TypeError) as exc:
            raise ConfigError("backend", redact_url(url), f"a valid Redis URL ({exc})") from None

    def __repr__(self) -> str:
        cluster = " cluster" if self._cluster else ""
        return f"<RedisBackend {redact_url(self._url)}{cluster} namespace={self.namespace!r}>"

    @property
    def client(self) -> redis.Redis | redis.cluster.RedisCluster:
        """The sync client (for inspection and tests); a cluster's connects here if not yet."""
        return self._sync_client()[0]

    def _sync_client(self) -> tuple[redis.Redis | redis.cluster.RedisCluster, _Scripts]:
        if self._client is None:
            with self._connecting:  # one cluster client, however many threads get here first
                if self._client is None:
                    import redis.cluster  # noqa: PLC0415 - an optional extra
                    import redis.retry  # noqa: PLC0415 - an optional extra

                    options = _without_cluster_retries(self._options, redis.retry.Retry)
                    client = redis.cluster.RedisCluster.from_url(self._url, **options)
                    self._scripts = {name: client.register_script(text) for name, text in SCRIPTS.items()}
                    self._client = client
        return self._client, self._scripts

    def key(self, key: str) -> str:
        """The Redis key holding the state of the limiter key ``key``."""
        return self._prefix + key

    def learned_key(self, key: str) -> str:
        """The Redis key holding what :meth:`learn` stored for ``key``."""
        # Same hash tag, so reserve's script reads it on the node of the bucket keys; a
        # different prefix than key()'s, so no limiter key can name it.
        return self._learned_prefix + key

    # Each operation is built once as (script, KEYS, ARGV) and its reply parsed once; only
    # the call differs between sync and async.
    def _reserve_call(
        self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], max_wait: float | None
    ) -> Call:
        # Runs on every request: the keys and bucket arguments come from a cache.
        redis_keys, tail = _reserve_layout(self._prefix, self._learned_prefix, tuple(keys), tuple(buckets))
        return "reserve", redis_keys, ["" if max_wait is None else repr(float(max_wait)), *tail]

    def _cancel_call(self, reservation: Reservation) -> Call | None:
        taken = spend(reservation)
        if taken is None:
            return None
        keys, charges = taken
        args = [str(MAX_HOLES), *(repr(x) for charge in charges for x in charge)]
        return "cancel", [self.key(k) for k in keys], args

    def _pause_call(self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], seconds: float) -> Call:
        args = [repr(float(seconds)), *_bucket_args(tuple(buckets))]
        return "pause", [self.key(k) for k in keys], args

    def _learn_call(self, key: str, value: str, ttl: float) -> Call:
        # PX takes whole milliseconds, at least 1; nothing left to keep is a delete, and an
        # infinite ttl keeps the value with no expiry, as the other backends do.
        px = "" if ttl == math.inf else str(max(0, math.ceil(ttl * 1000)))
        return "learn", [self.learned_key(key)], [value, px]

    @staticmethod
    def _reservation(keys: typing.Sequence[str], reply: typing.Any) -> Reservation:
        # "granted wait written before … [=learned]": one pair per key, then the learned
        # text, which may hold spaces, so only the numbers are split off.
        count = 2 + 2 * len(keys)
        parts = reply.split(maxsplit=count)
        if parts[0] in (b"0", "0"):
            return Reservation(float(parts[1]), granted=False)
        learned = None
        if len(parts) > count:
            text = parts[-1][1:]
            learned = text.decode() if isinstance(text, bytes) else text
        if count == 4:  # one key, the common case: no slices or zips
            charges: tuple[tuple[float, float], ...] = ((float(parts[2]), float(parts[3])),)
        else:
            numbers = [float(x) for x in parts[2:count]]
            charges = tuple(zip(numbers[::2], numbers[1::2], strict=True))
        # Positional: keywords cost more in a dataclass's __init__.
        return Reservation(float(parts[1]), True, tuple(keys), charges, False, learned)

    @staticmethod
    def _send(client: typing.Any, scripts: typing.Mapping[str, typing.Any], call: Call) -> typing.Any:
        # One command either way; the async client's returns an awaitable.
        name, keys, args = call
        if name == "peek":
            return client.get(keys[0])
        if name == "learn":
            px = int(args[1]) if args[1] else None
            return client.delete(keys[0]) if px == 0 else client.set(keys[0], args[0], px=px)
        return scripts[name](keys=keys, args=args)

    def _run(self, call: Call) -> typing.Any:
        try:
            script = self._scripts.get(call[0]) if self._pool is not None else None
            if script is not None:
                return self._evalsha(self._pool, script, call[1], call[2])
            return self._send(*self._sync_client(), call)
        except Exception as exc:
            raise self._error(exc) from exc

    # _evalsha and _aevalsha: one EVALSHA on a pooled connection, through redis-py's
    # connection API (as its pipelines use it) rather than the client's execute_command,
    # whose per-command machinery (observability hooks, HIMPORT dispatch, option plumbing,
    # the Script wrapper) costs more Python per acquire than the round trip's own. Same
    # pool, retry policy and disconnect on error; a NOSCRIPT goes to redis-py's Script,
    # which loads the script and runs it again. The two differ only in awaiting.
    def _evalsha(
        self, pool: typing.Any, script: redis.commands.core.Script, keys: list[str], args: list[str]
    ) -> typing.Any:
        conn: typing.Any = pool.get_connection()  # Any: redis-py's connection methods are untyped
        try:
            packed = self._packed_command(conn, script, keys, args)

            def round_trip() -> typing.Any:
                conn.send_packed_command(packed)
                return conn.read_response()

            try:
                return conn.retry.call_with_retry(round_trip, lambda _: conn.disconnect())
            except self._noscript:
                pass
        finally:
            if _marked_for_reconnect(conn):
                conn.disconnect()
            pool.release(conn)
        return script(keys=keys, args=args)

    async def _aevalsha(self, pool: typing.Any, script: typing.Any, keys: list[str], args: list[str]) -> typing.Any:
        conn: typing.Any = await pool.get_connection()
        try:
            packed = self._packed_command(conn, script, keys, args)

            async def round_trip() -> typing.Any:
                await conn.send_packed_command(packed)
                return await conn.read_response()

            async def disconnect(_: Exception) -> None:
                await conn.disconnect()

            try:
                return await conn.retry.call_with_retry(round_trip, disconnect)
            except self._noscript:
                pass
        finally:
            if _marked_for_reconnect(conn):
                await conn.disconnect()
            await pool.release(conn)
        return await script(keys=keys, args=args)

    def _packed_command(self, conn: typing.Any, script: typing.Any, keys: list[str], args: list[str]) -> typing.Any:
        """The EVALSHA packed for the wire, cached: a transport sends the same few, and
        packing one costs ~6 µs. Every connection of either client packs alike (one URL,
        one set of options)."""
        cache_key = (script.sha, len(keys), *keys, *args)
        packed = self._packed.get(cache_key)
        if packed is None:
            if len(self._packed) >= _PACKED_CACHE_SIZE:
                self._packed.clear()
            packed = self._packed[cache_key] = conn.pack_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return packed

    async def _arun(
        self, call: Call, abandoned: typing.Callable[[typing.Any], typing.Awaitable[None]] | None = None
    ) -> typing.Any:
        """``call``'s reply; if the caller is cancelled first, the reply goes to ``abandoned``."""
        if sniffio.current_async_library() != "asyncio":
            # A worker thread is never abandoned (anyio waits for it): the reply returns.
            return await anyio.to_thread.run_sync(self._run, call)
        # Run to its end: a reply abandoned half-way would leave capacity taken that no
        # one gives back. The wait is bounded by the socket timeout.
        return await run_to_end(self._around(call), abandoned)

    async def _around(self, call: Call) -> typing.Any:
        client, scripts, pool = self._async_client()
        try:
            script = scripts.get(call[0]) if pool is not None else None
            if script is not None:
                return await self._aevalsha(pool, script, call[1], call[2])
            return await self._send(client, scripts, call)
        except Exception as exc:
            raise self._error(exc) from exc

    def _async_client(self) -> tuple[typing.Any, _Scripts, typing.Any]:
        """This loop's asyncio client, its scripts, and its pool if scripts go straight to
        its connections (see _aevalsha), else None."""
        # An asyncio client's connections belong to the loop that made them.
        loop = asyncio.get_running_loop()
        found = self._async.get(loop)
        if found is None:
            import redis.asyncio  # noqa: PLC0415 - an optional extra
            import redis.asyncio.cluster  # noqa: PLC0415 - an optional extra
            import redis.asyncio.retry  # noqa: PLC0415 - an optional extra

            client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster = (
                redis.asyncio.cluster.RedisCluster.from_url(
                    self._url, **_without_cluster_retries(self._options, redis.asyncio.retry.Retry)
                )
                if self._cluster
                else redis.asyncio.Redis.from_url(self._url, **self._options)
            )
            scripts = {name: client.register_script(t) for name, t in SCRIPTS.items()}
            pool = None if self._cluster else _direct_pool(client)
            found = self._async[loop] = (client, scripts, pool)
        return found

    def _error(self, exc: Exception) -> BackendError:
        return BackendError(f"Redis backend {redact_url(self._url)}: {type(exc).__name__}: {exc}")

    def reserve(
        self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], *, max_wait: float | None
    ) -> Reservation:
        return self._reservation(keys, self._run(self._reserve_call(keys, buckets, max_wait)))

    def cancel(self, reservation: Reservation) -> None:
        call = self._cancel_call(reservation)
        if call is not None:
            self._run(call)

    def pause(self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], seconds: float) -> None:
        self._run(self._pause_call(keys, buckets, seconds))

    def learn(self, key: str, value: str, ttl: float) -> None:
        self._run(self._learn_call(key, value, ttl))

    def peek(self, key: str) -> str | None:
        return _text(self._run(("peek", [self.learned_key(key)], [])))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        # Async clients need their loop to close (aclose); without it they are dropped.
        self._async.clear()

    async def areserve(
        self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], *, max_wait: float | None
    ) -> Reservation:
        async def give_back(reply: typing.Any) -> None:
            await self.acancel(self._reservation(keys, reply))

        return self._reservation(keys, await self._arun(self._reserve_call(keys, buckets, max_wait), give_back))

    async def acancel(self, reservation: Reservation) -> None:
        call = self._cancel_call(reservation)
        if call is not None:
            await self._arun(call)

    async def apause(self, keys: typing.Sequence[str], buckets: typing.Sequence[Bucket], seconds: float) -> None:
        await self._arun(self._pause_call(keys, buckets, seconds))

    async def alearn(self, key: str, value: str, ttl: float) -> None:
        await self._arun(self._learn_call(key, value, ttl))

    async def apeek(self, key: str) -> str | None:
        return _text(await self._arun(("peek", [self.learned_key(key)], [])))

    async def aclose(self) -> None:
        if sniffio.current_async_library() == "asyncio":
            found = self._async.pop(asyncio.get_running_loop(), None)
            if found is not None:
                await found[0].aclose()
        self.close()


def _direct_pool(client: typing.Any) -> typing.Any:
    """``client``'s connection pool, if scripts can go straight to its connections: not when
    the client holds one connection of its own, nor when its pool predates
    ``get_connection()`` without arguments (redis-py < 5.3)."""
    if getattr(client, "single_connection_client", False) or getattr(client, "connection", None) is not None:
        return None
    pool = client.connection_pool
    command_name = inspect.signature(pool.get_connection).parameters.get("command_name")
    if command_name is not None and command_name.default is inspect.Parameter.empty:
        return None
    return pool


def _marked_for_reconnect(conn: typing.Any) -> bool:
    # As execute_command does: a connection a maintenance notice marked is dropped.
    should_reconnect = getattr(conn, "should_reconnect", None)
    return should_reconnect is not None and bool(should_reconnect())


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
