"""Upload bodies are sent whole, byte for byte the same, on every attempt.

The inner transport here (``_support.Recorder``) reads each body from its stream as a
socket would; ``test_e2e`` shows the same over a real connection.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import pathlib
import tempfile
import threading
import tracemalloc
import typing

import anyio
import httpx
import pytest
import trio
from _modes import by_mode, mode_fixture  # noqa: F401 - fixtures: `mode` and `anyio_backend`
from _support import URL, Harness, Recorder

from ratelimit_client import AsyncRateLimitTransport, MemoryBackend

pytestmark = pytest.mark.anyio

PAYLOAD = hashlib.sha256(b"seed").digest() * 4096  # 128 KiB, not all one byte
DROP = httpx.WriteError("connection reset by peer")


def _replies() -> list[httpx.Response | Exception | tuple[int, Exception]]:
    # Dropped a third of the way in, then a 503, then accepted: three attempts.
    return [(len(PAYLOAD) // 3, DROP), httpx.Response(503), httpx.Response(200)]


def _generator(pulls: list[int]) -> typing.Iterator[bytes]:
    for start in range(0, len(PAYLOAD), 10_000):
        pulls.append(start)
        yield PAYLOAD[start : start + 10_000]


async def _async_iterator(pulls: list[int]) -> typing.AsyncIterator[bytes]:
    for chunk in _generator(pulls):
        yield chunk


def _check(recorder: Recorder, response: httpx.Response) -> None:
    assert response.status_code == 200
    dropped, *complete = recorder.bodies
    assert PAYLOAD.startswith(dropped)  # bytes go as one chunk, streams are cut a third of the way
    assert complete == [PAYLOAD, PAYLOAD]


async def test_bytes_are_sent_whole_on_every_attempt(mode: str) -> None:
    recorder = Recorder(_replies())
    response = await Harness(mode, recorder).request("PUT", content=PAYLOAD)
    _check(recorder, response)


async def test_a_byte_stream_passed_as_the_stream_is_sent_whole_on_every_attempt(mode: str) -> None:
    # httpx holds the bytes of content=...; of stream=ByteStream(...) it holds none.
    recorder = Recorder(_replies())
    response = await Harness(mode, recorder).request("PUT", stream=httpx.ByteStream(PAYLOAD))
    _check(recorder, response)


async def test_a_one_shot_stream_is_read_once_and_replayed(mode: str) -> None:
    recorder = Recorder(_replies())
    pulls: list[int] = []
    content = _generator(pulls) if mode == "sync" else _async_iterator(pulls)
    response = await Harness(mode, recorder).request("PUT", content=content)
    _check(recorder, response)
    assert len(pulls) == len(range(0, len(PAYLOAD), 10_000))  # the stream itself was read once


def test_a_seekable_file_is_rewound_to_where_it_started(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "upload.bin"
    path.write_bytes(b"HEADER" + PAYLOAD)
    recorder = Recorder(_replies())
    with path.open("rb") as file:
        file.seek(6)  # the body starts where the file was handed over, not at 0
        response = Harness("sync", recorder).run(httpx.Request("PUT", URL, content=file))
    _check(recorder, response)


def test_a_non_seekable_file_is_spooled(tmp_path: pathlib.Path) -> None:
    read_end, write_end = os.pipe()

    def feed() -> None:
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(PAYLOAD)

    writer = threading.Thread(target=feed)
    writer.start()
    recorder = Recorder(_replies())
    with os.fdopen(read_end, "rb") as pipe:
        assert not pipe.seekable()
        response = Harness("sync", recorder).run(httpx.Request("PUT", URL, content=pipe))
    writer.join()
    _check(recorder, response)


def _open_files_under(directory: pathlib.Path) -> list[str]:
    """Paths of this process's open file descriptors inside ``directory`` (Linux /proc)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed while we looked (the listing's own descriptor)
        if target.startswith(str(directory)):
            found.append(target)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors through Linux /proc")
# 0 is on disk from the first byte (to SpooledTemporaryFile, a max_size of 0 meant "never").
@pytest.mark.parametrize(("threshold", "on_disk"), [(1024, True), (0, True), (len(PAYLOAD) * 2, False)])
async def test_a_large_one_shot_body_spills_to_disk_and_leaves_nothing_behind(
    mode: str, threshold: int, on_disk: bool, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    recorder = Recorder(_replies())
    seen: list[list[str]] = []
    recorder.during = lambda: seen.append(_open_files_under(tmp_path))
    pulls: list[int] = []
    content = _generator(pulls) if mode == "sync" else _async_iterator(pulls)

    response = await Harness(mode, recorder, spool_threshold=threshold).request("PUT", content=content)

    _check(recorder, response)
    # While sending, the spool was (or was not) a file in the temporary directory...
    assert all(bool(files) is on_disk for files in seen)
    assert len(seen) == 3
    # ...and afterwards no descriptor and no file is left.
    assert _open_files_under(tmp_path) == []
    assert os.listdir(tmp_path) == []


async def test_a_stream_that_fails_while_being_read_leaves_nothing_open(
    mode: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def broken() -> typing.Iterator[bytes]:
        yield PAYLOAD
        raise OSError("the source went away")

    async def abroken() -> typing.AsyncIterator[bytes]:
        for chunk in broken():
            yield chunk

    recorder = Recorder([httpx.Response(200)])
    with pytest.raises(OSError, match="the source went away"):
        await Harness(mode, recorder, spool_threshold=1024).request(
            "PUT", content=broken() if mode == "sync" else abroken()
        )
    assert recorder.bodies == []  # nothing was sent half-way
    assert _open_files_under(tmp_path) == []


class _AsyncBytesFile:
    """An async file over bytes, its tell/seek/read functools.partial-wrapped coroutines;
    ``seekable()`` is a coroutine too when ``awaited_seekable`` (as in aiofiles)."""

    def __init__(self, data: bytes, *, awaited_seekable: bool) -> None:
        self._file = io.BytesIO(data)
        self.seekable = functools.partial(self._io, "seekable") if awaited_seekable else self._file.seekable
        self.tell = functools.partial(self._io, "tell")
        self.seek = functools.partial(self._io, "seek")
        self.read = functools.partial(self._io, "read")

    async def _io(self, name: str, *args: int) -> typing.Any:
        return getattr(self._file, name)(*args)

    def __aiter__(self) -> _AsyncBytesFile:
        return self

    async def __anext__(self) -> bytes:
        if line := self._file.readline():
            return line
        raise StopAsyncIteration


async def _open_async_file(kind: str, path: pathlib.Path, data: bytes) -> typing.Any:
    """An async file of ``data`` (written at ``path``), of the ``kind`` asked for."""
    if kind == "anyio":
        return await anyio.open_file(path, "rb")
    if kind == "trio":
        return await trio.open_file(path, "rb")
    return _AsyncBytesFile(data, awaited_seekable=kind == "aiofiles-like")


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        ("asyncio", "anyio"),
        ("trio", "anyio"),
        ("trio", "trio"),
        ("asyncio", "partial-wrapped"),
        ("asyncio", "aiofiles-like"),
    ],
)
async def test_an_async_file_is_spooled_from_where_it_started(mode: str, kind: str, tmp_path: pathlib.Path) -> None:
    # Its seekable() may answer at once, but tell/seek/read must be awaited: a sync rewind
    # would do nothing and a retry would send an empty body.
    path = tmp_path / "upload.bin"
    path.write_bytes(b"HEADER" + PAYLOAD)
    recorder = Recorder(_replies())
    file = await _open_async_file(kind, path, b"HEADER" + PAYLOAD)
    await file.seek(6)  # the body starts where the file was handed over
    try:
        response = await Harness(mode, recorder).request("PUT", content=file)
    finally:
        if hasattr(file, "aclose"):
            await file.aclose()
    _check(recorder, response)


class _Discard(httpx.AsyncBaseTransport):
    """Reads each body as a socket would, keeping none of it."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        async for _ in typing.cast("httpx.AsyncByteStream", request.stream):
            pass
        return httpx.Response(200)


@pytest.mark.parametrize("mode", ["asyncio", "trio"])
async def test_an_async_file_is_read_in_chunks_not_lines(mode: str, tmp_path: pathlib.Path) -> None:
    # httpx iterates an async file by lines; this file's one line is all 16 MiB of it.
    path = tmp_path / "zeros.bin"
    path.write_bytes(bytes(16 * 1024 * 1024))
    transport = AsyncRateLimitTransport(
        _Discard(), rate="1000/second", ip="192.0.2.1", backend=MemoryBackend(), spool_threshold=0
    )
    async with await anyio.open_file(path, "rb") as file:
        tracemalloc.start()
        try:
            await transport.handle_async_request(httpx.Request("PUT", URL, content=file))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 4 * 1024 * 1024
