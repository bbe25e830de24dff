"""The FastAPI side of publishing: the ``Bus`` dependency, and the ASGI middleware that ties
events to requests.

Events published while handling an HTTP request are held in an outbox and sent only when the
endpoint finished without an exception and the response status is below 400, before the
response goes out (so a 2xx means the broker has the events).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from fastapi_bus.core.messages import new_id
from fastapi_bus.pipeline.provided import SCOPE_KEY, get_publisher
from fastapi_bus.runtime.publishing import (
    Outbox,
    Publisher,
    Sender,
    bind_publisher,
    unbind_publisher,
)

__all__ = ["Bus", "PublisherMiddleware", "get_publisher"]

REQUEST_ID_HEADER = b"x-request-id"


#: Declare ``bus: Bus`` in an endpoint or a handler to publish events.
Bus = Annotated[Publisher, Depends(get_publisher)]


class PublisherMiddleware:
    """Pure ASGI middleware: gives each request a publisher whose events are sent only if the
    request succeeds. ``X-Request-ID`` (or a new id) becomes their correlation id."""

    def __init__(self, app: ASGIApp, bus: Sender) -> None:
        self.app = app
        self.bus = bus

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        correlation_id = _request_id(scope) or new_id()
        # A WebSocket has no single success to wait for: its events go out at once.
        outbox = Outbox(self.bus) if scope["type"] == "http" else None
        publisher = Publisher(self.bus, correlation_id=correlation_id, outbox=outbox)
        scope[SCOPE_KEY] = publisher
        token = bind_publisher(publisher)

        async def send_wrapper(message: ASGIMessage) -> None:
            if outbox is not None and outbox.is_open and message["type"] == "http.response.start":
                if message["status"] < 400:
                    await outbox.flush()
                else:
                    outbox.discard()
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if outbox is not None and outbox.is_open:
                # The endpoint raised, or never answered: its events are not sent.
                outbox.discard()
            unbind_publisher(token)


def _request_id(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == REQUEST_ID_HEADER:
            text: str = value.decode("latin-1").strip()
            return text[:200] or None
    return None
