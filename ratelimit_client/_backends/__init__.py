"""Limiter backends, chosen by URL."""

from __future__ import annotations

import urllib.parse

from .._exceptions import ConfigError
from ._base import Backend, Reservation
from ._memory import MemoryBackend

__all__ = ["SCHEMES", "Backend", "MemoryBackend", "Reservation", "backend_from_url", "check_url"]

SCHEMES = ("memory",)


def check_url(url: str, *, field: str = "backend") -> str:
    """The URL's scheme, after checking it names a backend."""
    scheme = urllib.parse.urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ConfigError(field, url, f"a URL whose scheme is one of {', '.join(s + '://' for s in SCHEMES)}")
    return scheme


def backend_from_url(url: str, *, namespace: str) -> Backend:
    """A backend for ``url``, such as ``memory://``."""
    check_url(url)
    return MemoryBackend()
