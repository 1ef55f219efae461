"""Run the emulated API with uvicorn on loopback, closing its listening socket during outages."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
import time
import typing

from .._exceptions import ConfigError
from ._app import Outages, ServerConfig, Stats, create_app

if typing.TYPE_CHECKING:
    import uvicorn

    from ._middleware import RateLimitMiddleware

__all__ = ["RunningServer", "background_server", "serve"]

_TICK = 0.01  # how often the outage watcher looks at the schedule


def _uvicorn() -> typing.Any:
    try:
        import uvicorn  # noqa: PLC0415 - optional extra
    except ImportError:
        raise ConfigError("server", "uvicorn", "installed: pip install 'ratelimit-client[server]'") from None
    return uvicorn


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # Reopening the same port right after an outage must not wait for TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this. Without it a response's head and body go out as two
    # segments and the second waits for the client's delayed ACK: 40 ms a request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


@dataclasses.dataclass(slots=True)
class RunningServer:
    """A server that is up: where it listens, its stats and outage schedule, and a stop switch."""

    host: str
    port: int
    stats: Stats
    outages: Outages
    server: uvicorn.Server
    limiter: RateLimitMiddleware | None = None  # the app's rate limiter (to re-start its schedule)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True


def _protocol_factory(server: uvicorn.Server) -> typing.Callable[[], asyncio.Protocol]:
    """The factory uvicorn's startup uses, for a socket reopened after an outage."""
    config = server.config
    protocol_class: typing.Any = config.http_protocol_class

    def protocol() -> asyncio.Protocol:
        made: asyncio.Protocol = protocol_class(
            config=config, server_state=server.server_state, app_state=server.lifespan.state
        )
        return made

    return protocol


async def _watch_outages(server: uvicorn.Server, outages: Outages, host: str, port: int) -> None:
    """Close the listener (and drop open connections) during each outage, then listen again."""
    # uvicorn exposes "started" and "should_exit" as plain flags, so they are polled.
    while not server.started and not server.should_exit:  # noqa: ASYNC110
        await asyncio.sleep(_TICK)
    while not server.should_exit:
        window = outages.active()
        if window is None:
            await asyncio.sleep(_TICK)
            continue
        for listener in server.servers:
            listener.close()
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        while not server.should_exit and outages.active() is not None:  # noqa: ASYNC110
            await asyncio.sleep(_TICK)
        if server.should_exit:
            return
        listener = await asyncio.get_running_loop().create_server(_protocol_factory(server), sock=_listen(host, port))
        server.servers.append(listener)


async def serve(
    config: ServerConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    on_ready: typing.Callable[[RunningServer], None] | None = None,
    log_level: str = "warning",
) -> None:
    """Serve the emulated API until stopped; ``on_ready`` gets the server once it listens."""
    uvicorn = _uvicorn()
    app, stats, outages = create_app(config)
    sock = _listen(host, port)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="off")
    )
    running = RunningServer(host, port, stats, outages, server, app.middleware)
    watcher = asyncio.ensure_future(_watch_outages(server, outages, host, port))

    async def announce() -> None:
        while not server.started and not server.should_exit:  # noqa: ASYNC110
            await asyncio.sleep(_TICK)
        if server.started and on_ready is not None:
            on_ready(running)

    announcer = asyncio.ensure_future(announce())
    try:
        await server.serve(sockets=[sock])
    finally:
        server.should_exit = True
        await asyncio.gather(watcher, announcer, return_exceptions=True)
        sock.close()


@contextlib.contextmanager
def background_server(
    config: ServerConfig | None = None, *, host: str = "127.0.0.1", timeout: float = 10.0
) -> typing.Iterator[RunningServer]:
    """Run the emulated API in a thread for the duration of a ``with`` block (tests, simulations)."""
    ready: list[RunningServer] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(serve(config, host=host, on_ready=ready.append))
        except BaseException as exc:  # noqa: BLE001 - reported to the waiting thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="ratelimit-client-server")
    thread.start()
    deadline = time.monotonic() + timeout
    while not ready and not failed and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    if not ready:
        thread.join(1.0)
        raise RuntimeError("the emulated server did not start") from (failed[0] if failed else None)
    try:
        yield ready[0]
    finally:
        ready[0].stop()
        thread.join(timeout)
