"""One simulated uploader process: upload as fast as its client kind allows until the deadline.

Every kind shares one loop; only "how one upload is sent" differs:

- ``ratelimit-client``: this library's transport on the chosen backend;
- ``httpx+tenacity``: no limiter, tenacity retrying 429s and network errors with jittered
  exponential backoff (what one would write by hand);
- ``aiolimiter``: the same retries behind a per-process ``aiolimiter.AsyncLimiter`` at the
  full quota;
- ``pyrate-limiter``: the same retries behind pyrate-limiter's SQLite bucket shared by all
  processes through a file lock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import typing
import uuid

import anyio
import httpx
import tenacity

from .._adaptive import AdaptiveMode
from .._config import load_settings
from .._events import Event
from .._exceptions import RequestFailed
from .._rate import parse_rate
from .._transport import AsyncRateLimitTransport

if typing.TYPE_CHECKING:
    import multiprocessing.sharedctypes
    import multiprocessing.synchronize
    import queue

__all__ = ["KINDS", "SLOTS", "Kind", "WorkerResult", "WorkerSpec", "worker_main"]

Kind = typing.Literal["ratelimit-client", "httpx+tenacity", "aiolimiter", "pyrate-limiter"]
KINDS: tuple[Kind, ...] = ("ratelimit-client", "httpx+tenacity", "aiolimiter", "pyrate-limiter")

# Per-worker slots in the shared progress array. LEARNED: the rate this worker paces its
# key at now (requests per second; 0 for kinds that learn nothing).
DONE, LOST, THROTTLED, EPISODES, STATUS, LEARNED = range(6)
SLOTS = 6
STATUS_OK, STATUS_THROTTLED, STATUS_FAILING = 0.0, 1.0, 2.0


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What one worker process does. ``source_ip`` is bound as the local address when set."""

    index: int
    kind: Kind
    url: str
    api_key: str
    source_ip: str | None
    rate: str
    backend: str | None
    duration: float
    body_size: int
    namespace: str
    shared_path: str  # a scratch file the pyrate-limiter kind shares between processes
    adaptive: AdaptiveMode = "full"
    discover: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerResult:
    """What a worker reports when it ends. Latencies are per upload, in seconds."""

    index: int
    delivered: int
    lost: int
    throttled: int
    episodes: int
    latencies: tuple[float, ...]
    error: str | None = None


class _Progress:
    """This worker's slots in the shared array, written only by this worker."""

    def __init__(self, array: typing.Any, index: int) -> None:
        self._array = array
        self._base = index * SLOTS

    def add(self, slot: int, delta: float = 1.0) -> None:
        self._array[self._base + slot] += delta

    def set(self, slot: int, value: float) -> None:
        self._array[self._base + slot] = value

    def get(self, slot: int) -> float:
        return float(self._array[self._base + slot])

    def failing(self) -> None:
        if self.get(STATUS) != STATUS_FAILING:
            self.add(EPISODES)
        self.set(STATUS, STATUS_FAILING)


# Loading the CA bundle costs up to a second of CPU; made once here, it is inherited by
# every worker the forkserver forks instead of being loaded fifteen times.
_TLS = httpx.create_ssl_context()

Upload = typing.Callable[[httpx.AsyncClient, bytes, dict[str, str]], typing.Awaitable[httpx.Response]]
Sampler = typing.Callable[[], float]  # the rate a worker paces at now
_SAMPLE_EVERY = 0.1


def time_scale(rate: str) -> float:
    """How much faster than real time a run goes: a quota per second is one per minute, 60x
    faster. Every client kind's backoff is scaled alike, so a compressed run waits as a real
    one would (1 s of real backoff is 1/60 s at 50/second)."""
    return min(1.0, parse_rate(rate).per_seconds / 60)


def _retrying(spec: WorkerSpec, progress: _Progress) -> tenacity.AsyncRetrying:
    # What a careful hand-written client does, on the run's time scale.
    scale = time_scale(spec.rate)

    def throttled(response: object) -> bool:
        return isinstance(response, httpx.Response) and response.status_code in (429, 503)

    return tenacity.AsyncRetrying(
        retry=tenacity.retry_if_result(throttled) | tenacity.retry_if_exception_type(httpx.TransportError),
        wait=tenacity.wait_exponential_jitter(initial=1 * scale, max=60 * scale),
        stop=tenacity.stop_after_attempt(10),
        reraise=True,
    )


async def _attempt(
    client: httpx.AsyncClient, spec: WorkerSpec, body: bytes, headers: dict[str, str], p: _Progress
) -> httpx.Response:
    try:
        response = await client.post(f"{spec.url}/upload", content=body, headers=headers)
    except httpx.TransportError:
        p.failing()
        raise
    if response.status_code == 429:
        p.add(THROTTLED)
        p.set(STATUS, STATUS_THROTTLED)
    elif response.status_code < 500:
        p.set(STATUS, STATUS_OK)
    return response


async def _run(spec: WorkerSpec, progress: _Progress, go: typing.Any, results: typing.Any) -> WorkerResult:
    body = hashlib.sha256(str(spec.index).encode()).digest() * (spec.body_size // 32 + 1)
    body = body[: spec.body_size]
    expected = hashlib.sha256(body).hexdigest()
    inner = httpx.AsyncHTTPTransport(verify=_TLS, local_address=spec.source_ip)
    send_one, client, sample = _client_for(spec, progress, inner)
    latencies: list[float] = []
    delivered = lost = 0
    async with client, anyio.create_task_group() as tasks:
        results.put(("ready", spec.index))
        while not go.is_set():  # noqa: ASYNC110 - a cross-process event has no awaitable form
            await anyio.sleep(0.005)
        if sample is not None:
            tasks.start_soon(_sample, sample, progress)
        deadline = time.monotonic() + spec.duration
        while time.monotonic() < deadline:
            headers = {"Authorization": f"Bearer {spec.api_key}", "Idempotency-Key": uuid.uuid4().hex}
            started = time.monotonic()
            try:
                response = await send_one(client, body, headers)
                ok = response.status_code == 200 and response.json().get("sha256") == expected
            except (RequestFailed, httpx.HTTPError, tenacity.RetryError, ValueError):
                ok = False
            if ok:
                delivered += 1
                latencies.append(time.monotonic() - started)
                progress.add(DONE)
            else:
                lost += 1
                progress.add(LOST)
        tasks.cancel_scope.cancel()
    return WorkerResult(
        spec.index,
        delivered,
        lost,
        int(progress.get(THROTTLED)),
        int(progress.get(EPISODES)),
        tuple(latencies),
    )


async def _sample(sample: Sampler, progress: _Progress) -> None:
    # Sampled rather than taken from rate_changed events: after a cut the rate climbs back
    # continuously, and a value another process learned arrives through the backend.
    while True:
        progress.set(LEARNED, sample())
        await anyio.sleep(_SAMPLE_EVERY)


def _client_for(
    spec: WorkerSpec, progress: _Progress, inner: httpx.AsyncHTTPTransport
) -> tuple[Upload, httpx.AsyncClient, Sampler | None]:
    if spec.kind == "ratelimit-client":

        def on_event(event: Event) -> None:
            if event.kind == "throttled":
                progress.add(THROTTLED)
                progress.set(STATUS, STATUS_THROTTLED)
            elif event.kind == "network_failure":
                progress.failing()
            elif event.kind == "recovered":
                progress.set(STATUS, STATUS_OK)

        policy = load_settings().retry
        scale = time_scale(spec.rate)
        policy = dataclasses.replace(
            policy, backoff_base=policy.backoff_base * scale, backoff_max=policy.backoff_max * scale
        )
        transport = AsyncRateLimitTransport(
            inner,
            retry=policy,
            rate=spec.rate,
            backend=spec.backend,
            namespace=spec.namespace,
            ip=spec.source_ip,
            on_event=on_event,
            adaptive=spec.adaptive,
            adaptive_discover=spec.discover,
        )
        # The simulation shows the pacing the engine uses now, which no public API exposes.
        learner = transport._shared.engine.learner

        async def send(client: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
            response = await client.post(f"{spec.url}/upload", content=body, headers=headers)
            if transport.status.value == "ok":
                progress.set(STATUS, STATUS_OK)
            return response

        return send, httpx.AsyncClient(transport=transport), learner.slowest

    retrying = _retrying(spec, progress)
    acquire = _acquirer(spec)

    async def send_retrying(client: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
        async for attempt in retrying:
            with attempt:
                await acquire()
                response = await _attempt(client, spec, body, headers, progress)
            if attempt.retry_state.outcome is not None and not attempt.retry_state.outcome.failed:
                attempt.retry_state.set_result(response)
        return response

    return send_retrying, httpx.AsyncClient(transport=inner), None


def _acquirer(spec: WorkerSpec) -> typing.Callable[[], typing.Awaitable[None]]:
    """Each kind's limiter, taken before every attempt (retries included)."""
    rate = parse_rate(spec.rate)

    async def nothing() -> None:
        return None

    if spec.kind == "aiolimiter":
        import aiolimiter  # noqa: PLC0415 - only this kind needs it

        limiter = aiolimiter.AsyncLimiter(rate.requests, rate.per_seconds)

        async def acquire() -> None:
            await limiter.acquire()

        return acquire
    if spec.kind == "pyrate-limiter":
        import pyrate_limiter  # noqa: PLC0415 - only this kind needs it

        bucket = pyrate_limiter.SQLiteBucket.init_from_file(
            [pyrate_limiter.Rate(int(rate.requests), int(rate.per_seconds * 1000))],
            db_path=spec.shared_path,
            use_file_lock=True,
        )
        limiter_ = pyrate_limiter.Limiter(bucket)

        async def acquire_shared() -> None:
            await limiter_.try_acquire_async("upload")

        return acquire_shared
    return nothing


def worker_main(
    spec: WorkerSpec,
    array: multiprocessing.sharedctypes.SynchronizedArray[float] | typing.Any,
    go: multiprocessing.synchronize.Event,
    results: queue.Queue[object],
) -> None:
    """Process entry point: run the upload loop and put a :class:`WorkerResult` on ``results``."""
    progress = _Progress(array, spec.index)
    try:
        result = anyio.run(_run, spec, progress, go, results)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which shows it
        result = WorkerResult(spec.index, 0, 0, 0, 0, (), error=f"{type(exc).__name__}: {exc}")
    results.put(("result", result))
