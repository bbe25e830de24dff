"""The FastAPI side of publishing: the ``Bus`` dependency, and the ASGI middleware that ties
events to requests.

Events published while handling an HTTP request are held in an outbox and sent only when the
endpoint finished without an exception and the response status is below 400, before the
response goes out (so a 2xx means the broker has the events).

A request that publishes nothing pays little for this: its correlation id is worked out (from
``X-Request-ID``, or a new id) only when it publishes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.core.messages import new_id
from fastapi_bus.pipeline.provided import SCOPE_KEY, register_publisher_provider
from fastapi_bus.runtime.publishing import (
    Outbox,
    Publisher,
    Sender,
    bind_publisher,
    unbind_publisher,
)

__all__ = ["Bus", "PublisherMiddleware", "get_publisher"]

REQUEST_ID_HEADER = b"x-request-id"


async def get_publisher(connection: HTTPConnection) -> Any:
    """FastAPI dependency behind :data:`~fastapi_bus.Bus`: the request's publisher (in a
    handler, the resolver passes the handler's own publisher instead).

    ``async`` although it awaits nothing: FastAPI runs a plain ``def`` dependency in a worker
    thread, a hop that cost more than the rest of publishing one event."""
    publisher = connection.scope.get(SCOPE_KEY)
    if publisher is None:
        raise ConfigurationError(
            "no fastapi-bus on this app: install it with "
            "app.include_extension(BusExtension(...)) before the app starts"
        )
    return publisher


register_publisher_provider(get_publisher)

#: Declare ``bus: Bus`` in an endpoint or a handler to publish events.
Bus = Annotated[Publisher, Depends(get_publisher)]

#: Makes a request's correlation id once, should its worker threads ask at the same time.
_naming = threading.Lock()


class RequestPublisher(Publisher):
    """The publisher of one request (or WebSocket): its correlation id is the request's
    ``X-Request-ID``, else a new id, worked out when first needed."""

    def __init__(
        self, bus: Sender, headers: Iterable[tuple[bytes, bytes]], outbox: Outbox | None
    ) -> None:
        super().__init__(bus, outbox=outbox)
        self._headers = headers

    @property
    def correlation_id(self) -> str | None:
        correlation_id = self._correlation_id
        if correlation_id is None:
            named = _request_id(self._headers) or new_id()
            with _naming:
                if self._correlation_id is None:
                    self._correlation_id = named
                correlation_id = self._correlation_id
        return correlation_id


class PublisherMiddleware:
    """Pure ASGI middleware: gives each request a publisher whose events are sent only if the
    request succeeds. ``X-Request-ID`` (or a new id) becomes their correlation id."""

    def __init__(self, app: ASGIApp, bus: Sender) -> None:
        self.app = app
        self.bus = bus

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket":
                # A WebSocket has no single success to wait for: its events go out at once.
                await self._websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        outbox = Outbox(self.bus)
        publisher = RequestPublisher(self.bus, scope.get("headers", ()), outbox)
        scope[SCOPE_KEY] = publisher
        token = bind_publisher(publisher)

        async def send_wrapper(message: ASGIMessage) -> None:
            if message["type"] == "http.response.start" and outbox.is_open:
                if message["status"] < 400:
                    await outbox.flush()
                else:
                    outbox.discard()
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if outbox.is_open:
                # The endpoint raised, or never answered: its events are not sent.
                outbox.discard()
            unbind_publisher(token)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        publisher = RequestPublisher(self.bus, scope.get("headers", ()), None)
        scope[SCOPE_KEY] = publisher
        token = bind_publisher(publisher)
        try:
            await self.app(scope, receive, send)
        finally:
            unbind_publisher(token)


def _request_id(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for key, value in headers:
        if key == REQUEST_ID_HEADER:
            text: str = value.decode("latin-1").strip()
            return text[:200] or None
    return None
