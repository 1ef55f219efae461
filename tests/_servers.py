"""Real servers on loopback for end-to-end tests: uvicorn in a thread, ASGI apps, a raw socket server.

httpx's MockTransport (and respx) read a request body up front, so they cannot show what
happens when a connection drops half-way through an upload; these servers can.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import io
import socket
import socketserver
import struct
import threading
import time
import typing

import uvicorn

__all__ = ["DroppingUploadServer", "FlakyUploadApp", "ServerThread", "SlidingLogApp", "Upload", "max_in_window"]

Scope = typing.MutableMapping[str, typing.Any]
Message = typing.MutableMapping[str, typing.Any]
Receive = typing.Callable[[], typing.Awaitable[Message]]
Send = typing.Callable[[Message], typing.Awaitable[None]]


async def read_body(receive: Receive) -> bytes:
    """An ASGI request's whole body."""
    body = b""
    while True:
        message = await receive()
        body += typing.cast("bytes", message.get("body", b""))
        if not message.get("more_body"):
            return body


class ServerThread:
    """uvicorn serving an ASGI app on 127.0.0.1 at a free port, in a thread of this process."""

    def __init__(self, app: typing.Any) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit this; uvicorn sets it only on sockets it binds itself.
        # Without it every response waits ~40 ms on the client's delayed ACK.
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # h11 and no websockets: the same protocol stack everywhere, no optional imports.
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", ws="none", http="h11", loop="asyncio"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()


def max_in_window(times: typing.Sequence[float], window: float) -> int:
    """The most of ``times`` that fall in any half-open interval ``[t, t + window)``."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + window) - i for i, t in enumerate(ordered)), default=0)


@dataclasses.dataclass
class SlidingLogApp:
    """An API that admits at most ``limit`` requests in any ``window`` seconds (a sliding log),
    and answers the rest 429 with ``Retry-After`` (decimal seconds until the oldest entry expires).

    Every arrival is recorded (``arrivals``), refused or not, so a test can count what the
    server saw; ``bodies`` maps each admitted request's ``X-Request-Id`` to its body.
    """

    limit: int
    window: float
    arrivals: list[float] = dataclasses.field(default_factory=list)
    admitted: list[float] = dataclasses.field(default_factory=list)
    refused: int = 0
    bodies: dict[str, bytes] = dataclasses.field(default_factory=dict)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = await read_body(receive)
        now = time.monotonic()
        self.arrivals.append(now)
        recent = [t for t in self.admitted if t > now - self.window]
        if len(recent) >= self.limit:
            self.refused += 1
            retry_after = min(recent) + self.window - now
            await _respond(send, 429, b"slow down", [(b"retry-after", f"{retry_after:.3f}".encode())])
            return
        self.admitted.append(now)
        request_id = dict(scope["headers"]).get(b"x-request-id", b"").decode()
        self.bodies[request_id] = body
        await _respond(send, 200, hashlib.sha256(body).hexdigest().encode(), [])


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class DroppingUploadServer:
    """A bare HTTP/1.1 server that resets the first ``drops`` connections after receiving
    ``drop_after`` bytes of the request body, then reads bodies whole and answers 200 with
    their SHA-256. ``received`` lists the complete bodies; ``dropped`` counts the resets.
    """

    def __init__(self, *, drop_after: int, drops: int = 1) -> None:
        self.drop_after = drop_after
        self.drops = drops
        self.dropped = 0
        self.received: list[bytes] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                outer._handle(self.connection, self.rfile, self.wfile)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})

    def __enter__(self) -> DroppingUploadServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def _handle(self, connection: socket.socket, rfile: io.BufferedIOBase, wfile: io.BufferedIOBase) -> None:
        while True:  # keep-alive: one request after another on this connection
            request_line = rfile.readline()
            if not request_line:
                return
            headers: dict[str, str] = {}
            while (line := rfile.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            with self._lock:
                drop = self.dropped < self.drops
                if drop:
                    self.dropped += 1
            body = _read_body(rfile, headers, limit=self.drop_after if drop else None)
            if drop:
                # RST rather than FIN: the client sees the connection die mid-upload.
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                connection.close()
                return
            with self._lock:
                self.received.append(body)
            digest = hashlib.sha256(body).hexdigest().encode()
            wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(digest), digest))
            wfile.flush()


def _read_body(rfile: io.BufferedIOBase, headers: dict[str, str], *, limit: int | None) -> bytes:
    """The request body (Content-Length or chunked), or only its first ``limit`` bytes."""
    if "content-length" in headers:
        size = int(headers["content-length"])
        return rfile.read(size if limit is None else min(size, limit))
    body = b""
    while True:
        size = int(rfile.readline().split(b";")[0], 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return body
        body += rfile.read(size)
        rfile.readline()
        if limit is not None and len(body) >= limit:
            return body


@dataclasses.dataclass(frozen=True)
class Upload:
    """One request as the server read it: its body and how that body was framed."""

    body: bytes
    content_length: str | None
    chunked: bool


@dataclasses.dataclass
class FlakyUploadApp:
    """An API that answers its first ``failures`` requests 503 and the rest 200 (with the
    body's SHA-256); ``uploads`` records every request, in order of arrival."""

    failures: int = 1
    uploads: list[Upload] = dataclasses.field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = await read_body(receive)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        chunked = headers.get(b"transfer-encoding", b"").lower() == b"chunked"
        self.uploads.append(Upload(body, None if length is None else length.decode(), chunked))
        status = 503 if len(self.uploads) <= self.failures else 200
        await _respond(send, status, hashlib.sha256(body).hexdigest().encode(), [])
