"""Who a request is from: the API key it carries (hashed, never kept raw) and the local IP."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import socket

__all__ = ["api_key_from_authorization", "key_id", "local_ip_for"]

ANONYMOUS = "anonymous"


def api_key_from_authorization(value: str | None) -> str | None:
    """The API key in an ``Authorization`` header: a Bearer token, or Basic's password."""
    if not value:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    credentials = credentials.strip()
    if not credentials:
        return None
    if scheme.lower() == "bearer":
        return credentials
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        # W&B sends "api:<key>": the key is the password. Others (Stripe, `curl -u key:`)
        # send the key as the user with an empty password.
        user, _, password = decoded.partition(":")
        return password or user or None
    return None


def key_id(api_key: str | None, namespace: str) -> str:
    """A stable, non-reversible name for ``api_key``: HMAC-SHA-256, truncated to 128 bits.

    Every process and host that shares a namespace derives the same name, so they share
    a bucket, while the key itself is never stored, logged or sent to a backend.
    """
    if api_key is None:
        return ANONYMOUS
    secret = f"ratelimit-client/v1/{namespace}".encode()
    return hmac.new(secret, api_key.encode(), hashlib.sha256).hexdigest()[:32]


def local_ip_for(host: str, port: int) -> str | None:
    """The local address the OS would use to reach ``host``, or None when it cannot tell.

    A connected UDP socket sends nothing; the kernel only picks the route and source.
    This may resolve ``host`` (blocking): async callers run it in a worker thread.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return None
    for family, kind, proto, _, address in infos:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.connect(address)
                return str(sock.getsockname()[0])
        except OSError:
            continue
    return None
