"""Request bodies that can be sent again, byte for byte, on every attempt.

- bytes (httpx's ``ByteStream``): sent as they are;
- a seekable file: rewound to where it started before each attempt;
- anything else (generators, async iterators, pipes, multipart): read once into a
  spool that stays in memory up to a threshold and spills to an anonymous temporary
  file beyond it, so memory stays bounded and a retry never sends half a body.
"""

from __future__ import annotations

import tempfile
import typing

import httpx

__all__ = ["DEFAULT_SPOOL_THRESHOLD", "Replay", "Spool", "for_async_send", "replay_for"]

DEFAULT_SPOOL_THRESHOLD = 25 * 1024 * 1024  # W&B's per-request guidance
_CHUNK = 64 * 1024


class Spool:
    """A write-once, read-many buffer of a request body."""

    __slots__ = ("_file", "size")

    def __init__(self, threshold: int) -> None:
        # SpooledTemporaryFile rolls over to tempfile.TemporaryFile, which is unlinked at
        # once on POSIX: nothing is left on disk, even if the process is killed.
        self._file = tempfile.SpooledTemporaryFile(max_size=threshold)  # noqa: SIM115
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.size += len(chunk)

    def chunks(self) -> typing.Iterator[bytes]:
        self._file.seek(0)
        while chunk := self._file.read(_CHUNK):
            yield chunk

    def close(self) -> None:
        self._file.close()


class _SpoolStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, spool: Spool) -> None:
        self._spool = spool

    def __iter__(self) -> typing.Iterator[bytes]:
        yield from self._spool.chunks()

    def __aiter__(self) -> typing.AsyncIterator[bytes]:
        return _AsyncChunks(self._spool.chunks())


class _AsyncChunks:
    """Async iteration over a spool's chunks.

    Not an async generator: when a connection drops mid-upload the sender stops
    iterating, and an abandoned async generator needs an event-loop finaliser (trio
    reports it as an unraisable error); a plain iterator needs nothing.
    """

    __slots__ = ("_chunks",)

    def __init__(self, chunks: typing.Iterator[bytes]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> _AsyncChunks:
        return self

    async def __anext__(self) -> bytes:
        # Reads of at most 64 KiB from memory or the page cache: short enough for the loop.
        try:
            return next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None


class _Bytes(httpx.ByteStream):
    """httpx's ByteStream, iterated asynchronously without an async generator."""

    def __aiter__(self) -> typing.AsyncIterator[bytes]:
        return _AsyncChunks(iter(self))


class Replay:
    """Hands out a request for each attempt whose body is the same bytes as the first."""

    __slots__ = ("_file", "_position", "_request", "_spool")

    def __init__(
        self,
        request: httpx.Request,
        *,
        file: typing.IO[bytes] | None = None,
        spool: Spool | None = None,
    ) -> None:
        self._request = request
        self._file = file
        self._position = file.tell() if file is not None else 0
        self._spool = spool

    def request(self) -> httpx.Request:
        if self._file is not None:
            self._file.seek(self._position)
        if self._spool is None:
            return self._request
        original = self._request
        return httpx.Request(
            original.method,
            original.url,
            headers=original.headers,
            stream=_SpoolStream(self._spool),
            extensions=original.extensions,
        )

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


def replay_for(request: httpx.Request) -> Replay | None:
    """A :class:`Replay` when the body can be replayed as it is, else None (spool it)."""
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        return Replay(request)
    # httpx wraps a file passed as ``content=`` in an IteratorByteStream that reads it
    # with .read(); a second pass would start at EOF and send an empty body.
    inner = getattr(stream, "_stream", None)
    if inner is not None and _seekable(inner):
        return Replay(request, file=typing.cast("typing.IO[bytes]", inner))
    return None


def for_async_send(request: httpx.Request) -> httpx.Request:
    """``request``, ready to go to an async transport: a body in httpx's ByteStream, which
    iterates with an async generator that an upload cut mid-way abandons (see
    _AsyncChunks), is put in one that iterates without (the same bytes)."""
    # Only async sends need this, so the sync transport does not pay for it.
    if type(request.stream) is httpx.ByteStream:
        # read(): the bytes httpx already holds (it joins the stream only if it holds none).
        request.stream = _Bytes(request.read())
    return request


def _seekable(obj: object) -> bool:
    try:
        return bool(obj.seekable()) and hasattr(obj, "tell") and hasattr(obj, "read")  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
