"""What the bus provides by dependency: the publisher behind ``bus: Bus``.

In an endpoint, FastAPI calls :func:`get_publisher`, which finds the request's publisher that
the publisher middleware put in the ASGI scope. In a handler, the resolver recognises the same
callable and passes the handler's own publisher instead.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection

from fastapi_bus.core.exceptions import ConfigurationError

__all__ = ["SCOPE_KEY", "get_publisher", "is_publisher_provider"]

#: Where the publisher middleware keeps the request's publisher in the ASGI scope.
SCOPE_KEY = "fastapi_bus.publisher"


async def get_publisher(connection: HTTPConnection) -> Any:
    """FastAPI dependency behind :data:`~fastapi_bus.Bus`: the request's publisher.

    ``async`` although it awaits nothing: FastAPI runs a plain ``def`` dependency in a worker
    thread, a hop that cost more than the rest of publishing one event."""
    publisher = connection.scope.get(SCOPE_KEY)
    if publisher is None:
        raise ConfigurationError(
            "no fastapi-bus on this app: install it with "
            "app.include_extension(BusExtension(...)) before the app starts"
        )
    return publisher


def is_publisher_provider(call: Any) -> bool:
    """True for the callable behind ``Bus``."""
    return call is get_publisher
