"""Call an ASGI app directly, without a server: for the middleware's pure decisions."""

from __future__ import annotations

import typing


class Clock:
    """Time that moves only when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def call(
    app: typing.Any,
    *,
    path: str = "/upload",
    method: str = "POST",
    headers: typing.Sequence[tuple[str, str]] = (),
    client: tuple[str, int] = ("203.0.113.7", 50000),
    body: bytes = b"hello",
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; headers' names lower-cased."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "client": client,
    }
    sent: list[dict[str, typing.Any]] = []
    delivered = False

    async def receive() -> dict[str, typing.Any]:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: typing.MutableMapping[str, typing.Any]) -> None:
        sent.append(dict(message))

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, payload
