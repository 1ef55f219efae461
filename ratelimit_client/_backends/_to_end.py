"""Backend I/O that a cancelled caller cannot cut off half-way."""

from __future__ import annotations

import asyncio
import contextlib
import typing

import anyio
import sniffio

__all__ = ["run_to_end"]

T = typing.TypeVar("T")


async def run_to_end(
    work: typing.Coroutine[typing.Any, typing.Any, T],
    abandoned: typing.Callable[[T], typing.Awaitable[None]] | None = None,
) -> T:
    """Await ``work`` to its end, even if the caller is cancelled meanwhile.

    A script that reached Redis, or a transaction a worker thread began, takes its slot
    whatever happens to the caller, so the caller waits for it (as long as the socket or
    busy timeout allows). On trio a shield does it and the result returns; the caller
    sees its cancellation at its next checkpoint. On asyncio a task's own ``cancel()``
    passes anyio's shields, so the work runs in a task of its own, and a caller cancelled
    meanwhile hands the result nobody will read to ``abandoned`` (a reservation is given
    back there) before its cancellation goes on.
    """
    if sniffio.current_async_library() != "asyncio":
        with anyio.CancelScope(shield=True):
            return await work
    task = asyncio.ensure_future(work)
    interrupted: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            interrupted = exc  # the work goes on; so does the wait for it
    if interrupted is None:
        return task.result()
    if not task.cancelled() and task.exception() is None and abandoned is not None:
        # A give-back that fails leaves the slot taken, as if the request had been sent:
        # the cancellation is what the caller must see.
        with contextlib.suppress(Exception):
            await abandoned(task.result())
    raise interrupted
