"""The loopback server for ``bench_core.py``: a minimal ASGI app under uvicorn.

Run as a separate process (``python bench_core_server.py PORT``) so the server and the
client do not share one GIL; the client side is then all that differs between runs.
"""

from __future__ import annotations

import sys
import typing

import uvicorn

Message = dict[str, typing.Any]
_BODY = b"ok"
_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(_BODY)).encode())]


async def app(
    scope: Message,
    receive: typing.Callable[[], typing.Awaitable[Message]],
    send: typing.Callable[[Message], typing.Awaitable[None]],
) -> None:
    """Answer every request with a 200 and two bytes, after draining its body."""
    assert scope["type"] == "http"
    more = True
    while more:
        message = await receive()
        more = bool(message.get("more_body", False))
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})


def main(port: int) -> None:
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


if __name__ == "__main__":
    main(int(sys.argv[1]))
