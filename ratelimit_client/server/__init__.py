"""Server side: a reusable rate-limit ASGI middleware and an emulated rate-limited upload API.

Needs the ``server`` extra (uvicorn) only to *run* the API; the middleware is plain ASGI.
"""

from ._app import Faults, Outages, ServerConfig, Stats, UploadAPI, create_app
from ._counting import MODES, Mode, Verdict
from ._middleware import HeaderStyle, RateLimitMiddleware, RequestDecision, ServerScope, client_ip
from ._run import RunningServer, background_server, serve

__all__ = [
    "MODES",
    "Faults",
    "HeaderStyle",
    "Mode",
    "Outages",
    "RateLimitMiddleware",
    "RequestDecision",
    "RunningServer",
    "ServerConfig",
    "ServerScope",
    "Stats",
    "UploadAPI",
    "Verdict",
    "background_server",
    "client_ip",
    "create_app",
    "serve",
]
