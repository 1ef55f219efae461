"""Upload workers for the outage test, started from a forkserver (see test_server_outage.py).

Each worker reports ``"ready"`` on ``out`` once set up, waits for ``go``, uploads until
``stop`` is set, and reports a :class:`Report` on ``out``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing.synchronize
import random
import typing

import httpx

from ratelimit_client import Event, RateLimitTransport, RetryPolicy, Status

Queue = typing.Any  # multiprocessing's queue type is not public
# Patient with failures, quick to come back: the outage lasts seconds, not minutes.
POLICY = RetryPolicy(backoff_base=0.1, backoff_max=1.0, failure_attempts=200, failure_timeout=60)


@dataclasses.dataclass(frozen=True)
class Report:
    """What one worker saw: uploads delivered and checked, events, statuses in order."""

    source_ip: str
    uploads: int
    mismatched: int  # answers whose size or SHA-256 differ from what was sent
    kinds: tuple[str, ...]  # event kinds, in order
    statuses: tuple[str, ...]  # transport.status at each event, in order
    retry_waits: tuple[float, ...]  # the wait announced by each "retrying" event
    final_status: str
    error: str | None  # the exception that ended the run early, if one did


def upload(
    number: int, server: str, backend: str, go: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event, out: Queue,
) -> None:  # fmt: skip
    """Upload random bodies through one shared API key until ``stop``; check each answer."""
    source_ip = f"127.0.0.{number + 2}"  # the server tells workers apart by source address
    kinds: list[str] = []
    statuses: list[str] = []
    waits: list[float] = []
    transport: RateLimitTransport | None = None

    def on_event(event: Event) -> None:
        kinds.append(event.kind)
        assert transport is not None
        # Status is set before the event is emitted: this is the status the event announces.
        statuses.append(transport.status.value)
        if event.kind == "retrying" and event.wait is not None:
            waits.append(event.wait)

    transport = RateLimitTransport(
        httpx.HTTPTransport(local_address=source_ip),
        rate="60/second",
        server_counting="token_bucket",
        backend=backend,
        namespace="outage",
        api_key="outage-key",
        ip="127.0.0.1",  # one limiter bucket for the fleet, whatever the source address
        retry=POLICY,
        on_event=on_event,
    )
    rng = random.Random(number)
    uploads = mismatched = 0
    error: str | None = None
    with httpx.Client(transport=transport, timeout=5.0) as client:
        out.put("ready")
        go.wait()
        try:
            while not stop.is_set():
                body = rng.randbytes(rng.randrange(1, 64 * 1024))
                # An idempotency key makes a POST replayable after a connection died under it.
                headers = {"Authorization": "Bearer outage-key", "Idempotency-Key": f"{number}-{uploads}"}
                answer = client.post(f"{server}/upload", content=body, headers=headers).json()
                uploads += 1
                if answer != {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}:
                    mismatched += 1
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
    final = transport.status.value
    out.put(Report(source_ip, uploads, mismatched, tuple(kinds), tuple(statuses), tuple(waits), final, error))


__all__ = ["POLICY", "Report", "Status", "upload"]
