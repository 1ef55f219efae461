"""Exceptions raised by ratelimit-client.

The hierarchy::

    RateLimitClientError
    ├── ConfigError            a setting is invalid (names the field, the value, what is allowed)
    ├── BackendError           the limiter's storage failed (names the backend, never a secret)
    ├── MaxWaitExceeded        the limiter's next slot is further away than ``max_wait``
    └── RequestFailed          a request could not be delivered; carries ``attempts``
        ├── RateLimited        still throttled (429) when the throttle budget was spent
        ├── ServerWaitTooLong  the server asked for a wait longer than we may sleep
        ├── ServerError        still 5xx when the failure budget was spent
        └── NetworkFailure     transport errors until the failure budget was spent, or a
                               non-replayable request failed after it may have been sent

``RequestFailed`` keeps the last response (``.response``, closed) or the last transport
error (``__cause__``). Messages never contain an API key or a URL's query string.
"""

from __future__ import annotations

import typing

if typing.TYPE_CHECKING:
    import httpx

__all__ = [
    "BackendError",
    "ConfigError",
    "MaxWaitExceeded",
    "NetworkFailure",
    "RateLimitClientError",
    "RateLimited",
    "RequestFailed",
    "ServerError",
    "ServerWaitTooLong",
]


class RateLimitClientError(Exception):
    """Base class of every error this library raises."""


class ConfigError(RateLimitClientError, ValueError):
    """An invalid setting. ``field`` and ``value`` say which one."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"invalid {field}: {value!r} (expected {allowed})")


class BackendError(RateLimitClientError):
    """The limiter's storage could not be used."""


class MaxWaitExceeded(RateLimitClientError):
    """The next free slot is ``wait`` seconds away, more than ``max_wait``; nothing was taken.

    When a retry met it, ``attempts`` were made before and ``response`` is the last one
    (closed), if any; a first attempt meets it with ``attempts`` 0.
    """

    def __init__(
        self,
        wait: float,
        max_wait: float,
        *,
        attempts: int = 0,
        response: httpx.Response | None = None,
        after: str = "",
    ) -> None:
        self.wait = wait
        self.max_wait = max_wait
        self.attempts = attempts
        self.response = response
        message = f"next rate-limit slot is {wait:.3f} s away, more than max_wait={max_wait:g} s"
        if attempts:
            message += f"; gave up after {attempts} attempt(s), the last: {after}"
        super().__init__(message)


class RequestFailed(RateLimitClientError):
    """A request was given up on. ``attempts`` were made; ``response`` is the last one, if any."""

    def __init__(self, message: str, *, attempts: int, response: httpx.Response | None = None) -> None:
        self.attempts = attempts
        self.response = response
        super().__init__(message)


class RateLimited(RequestFailed):
    """The server still answered 429 when the throttle retry budget was spent."""


class ServerWaitTooLong(RequestFailed):
    """The server asked for a wait (``wait`` seconds) beyond what the policy allows."""

    def __init__(self, message: str, *, attempts: int, wait: float, response: httpx.Response | None) -> None:
        self.wait = wait
        super().__init__(message, attempts=attempts, response=response)


class ServerError(RequestFailed):
    """The server still answered 5xx when the failure retry budget was spent."""


class NetworkFailure(RequestFailed):
    """The request could not be delivered over the network; the last error is ``__cause__``."""
