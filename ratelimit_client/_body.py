"""Request bodies that can be sent again, byte for byte, on every attempt.

- bytes (httpx's ``ByteStream``): sent as they are;
- a seekable file: rewound to where it started before each attempt;
- anything else (generators, async iterators, async files, pipes, multipart): read once
  into a spool that stays in memory up to a threshold and spills to an anonymous
  temporary file beyond it, so memory stays bounded and a retry never sends half a body.
  A spooled body is sent with its true Content-Length when the request declared one.
"""

from __future__ import annotations

import inspect
import os
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
        if threshold == 0:
            # To SpooledTemporaryFile a max_size of 0 means "never roll over"; here it means
            # "nothing in memory".
            self._file.rollover()
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


class _AsyncReadable(typing.Protocol):
    def read(self, size: int, /) -> typing.Awaitable[bytes]: ...


class _AsyncFileStream(httpx.AsyncByteStream):
    """An async file's bytes, read 64 KiB at a time.

    httpx iterates an async file by its lines, and a binary file may have none: its one
    line would be the whole file, in memory.
    """

    def __init__(self, file: _AsyncReadable) -> None:
        self._file = file

    def __aiter__(self) -> _AsyncFileStream:
        return self

    async def __anext__(self) -> bytes:
        if chunk := await self._file.read(_CHUNK):
            return chunk
        raise StopAsyncIteration


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
        if file is not None:
            # httpx declares the whole file's size however far in it was handed over (so
            # plain httpx fails mid-send too): the body is what is left from there.
            end = file.seek(0, os.SEEK_END)
            file.seek(self._position)
            _declare_length(request.headers, end - self._position)
        elif spool is not None:
            _declare_length(request.headers, spool.size)

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
    """A :class:`Replay` when the body can be replayed as it is, else None: spool
    ``request.stream`` (an async file's is replaced by one that reads it in chunks)."""
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        return Replay(request)
    # httpx wraps a file passed as ``content=`` in an IteratorByteStream that reads it
    # with .read(); a second pass would start at EOF and send an empty body.
    inner = getattr(stream, "_stream", None)
    if _rewindable(inner):
        return Replay(request, file=typing.cast("typing.IO[bytes]", inner))
    if inspect.iscoroutinefunction(getattr(inner, "read", None)):
        # Spooled rather than rewound: Replay rewinds without awaiting, so the engine needs
        # no async step; and a chunk never holds more than 64 KiB of the file in memory.
        request.stream = _AsyncFileStream(typing.cast("_AsyncReadable", inner))
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


def _declare_length(headers: httpx.Headers, size: int) -> None:
    """Set the Content-Length ``headers`` declare, if any, to the body's true ``size``."""
    # httpx declares 0 for a pipe (fstat's size) and a whole file for one handed over
    # partway, and a caller's value may be wrong too. Any other value than the truth is
    # refused by h11 mid-send, or, through an inner transport that trusts it, makes the
    # server read a cut or overrun body. A chunked request stays chunked.
    if "content-length" in headers:
        headers["Content-Length"] = str(size)


def _rewindable(obj: object) -> bool:
    """Whether ``obj`` is a seekable file whose I/O needs no awaiting."""
    # An async file (anyio's, trio's) answers seekable() at once, but its tell/seek/read
    # return coroutines: "rewinding" it would do nothing. (iscoroutinefunction sees
    # through bound methods and functools.partial.)
    methods = [getattr(obj, name, None) for name in ("seekable", "tell", "seek", "read")]
    if not all(callable(method) and not inspect.iscoroutinefunction(method) for method in methods):
        return False
    try:
        return bool(obj.seekable())  # type: ignore[attr-defined]
    except (OSError, ValueError):
        return False
