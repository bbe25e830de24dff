"""What the bus provides by dependency: the publisher behind ``bus: Bus``.

In an endpoint, FastAPI calls :func:`fastapi_bus.web.publisher.get_publisher`, which finds the
request's publisher that the publisher middleware put in the ASGI scope. In a handler, the
resolver recognises the same callable and passes the handler's own publisher instead.

The callable lives with the FastAPI glue (its parameter is a Starlette ``HTTPConnection``, which
FastAPI reads from its annotation) and is registered here when that module is imported. Until
then no handler can name it, and a worker that never imports FastAPI does not import it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["SCOPE_KEY", "is_publisher_provider", "register_publisher_provider"]

#: Where the publisher middleware keeps the request's publisher in the ASGI scope.
SCOPE_KEY = "fastapi_bus.publisher"

#: The callable behind ``Bus`` once registered (a placeholder that nothing is, until then).
_provider: object = object()


def register_publisher_provider(call: Callable[..., Any]) -> None:
    """Make ``call`` the callable behind ``Bus`` (done once, by ``fastapi_bus.web.publisher``)."""
    global _provider
    _provider = call


def is_publisher_provider(call: Any) -> bool:
    """True for the callable behind ``Bus``."""
    return call is _provider
