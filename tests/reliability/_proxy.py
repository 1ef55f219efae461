"""A delaying TCP proxy on loopback, to slow a real server down (here, a private redis-server).

Threads, one pair per connection, bounded by ``max_connections``; every chunk going back
to the client waits ``delay`` seconds first (settable at any time), so a reply can be
made to arrive after the client's timeout, or while its caller is being cancelled.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

__all__ = ["DelayProxy"]


class DelayProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``upstream``, delaying replies by ``delay``."""

    def __init__(self, upstream: int, *, max_connections: int = 64) -> None:
        self.upstream = upstream
        self.delay = 0.0
        self.max_connections = max_connections
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._thread.join(5)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    @property
    def open_connections(self) -> int:
        """Client connections currently open through the proxy."""
        with self._lock:
            return len(self._sockets) // 2

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                full = len(self._sockets) // 2 >= self.max_connections
            try:
                if full:
                    raise OSError("too many connections")
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=1)
            except OSError:
                client.close()  # upstream down (or full): the client sees a closed connection
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, delayed: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if delayed and self.delay:
                    time.sleep(self.delay)
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            # Either side closing closes both, as a real proxy would.
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._sockets -= {source, target}
