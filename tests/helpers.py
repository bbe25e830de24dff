"""Small apps for tests."""

from __future__ import annotations

from pydantic import BaseModel

from fastapi_bus import BusExtension, EventRouter, FastAPI, Message


class OrderPlaced(BaseModel):
    order_id: str
    total: float


class OrderShipped(BaseModel):
    order_id: str


class Recorder:
    """Collects what handlers saw."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self.messages: list[Message] = []

    def add(self, event: object, message: Message) -> None:
        self.events.append(event)
        self.messages.append(message)


def order_router(recorder: Recorder) -> EventRouter:
    """One handler, ``reserve_stock``, that records every ``OrderPlaced``."""
    events = EventRouter()

    @events.on("OrderPlaced")
    async def reserve_stock(event: OrderPlaced, msg: Message) -> None:
        recorder.add(event, msg)

    return events


def make_app(
    *routers: EventRouter, url: str = "memory://", service: str = "shop"
) -> tuple[FastAPI, BusExtension]:
    app = FastAPI()
    extension = BusExtension(url=url, routers=list(routers), service=service)
    app.include_extension(extension)
    return app, extension
