"""A small orders service: HTTP endpoints publish events, handlers react to them.

Run it with ``uvicorn example_app.main:app``. The broker comes from ``FASTAPI_BUS_URL``
(default ``memory://``, an in-process broker); set it to an ``amqp://`` URL to use RabbitMQ.

The flow: ``POST /orders`` saves an order and publishes ``orders.placed``; ``reserve_stock``
takes the items out of stock and publishes ``orders.stock_reserved``; ``send_confirmation``
marks the order confirmed. ``POST /orders/{id}/cancel`` publishes ``orders.cancelled`` and
``release_stock`` puts the items back. ``audit`` records every event under ``orders``.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from example_app.events import OrderCancelled, OrderPlaced, StockReserved
from fastapi_bus import Bus, BusExtension, EventRouter, FastAPI, Message, Tracing, get_bus

# The "database": an in-memory store, and a session over it that commits on success.

DEFAULT_STOCK: Mapping[str, int] = {"widget": 10, "gadget": 2}

OrderStatus = Literal["placed", "reserved", "out_of_stock", "cancelled"]


class Order(BaseModel):
    order_id: str
    item: str
    quantity: int
    status: OrderStatus = "placed"
    stock_reserved: bool = False
    confirmation_sent: bool = False
    #: Bumped on every write; a session's commit fails if someone else wrote in between.
    version: int = 0


class AuditEntry(BaseModel):
    event: str
    order_id: str | None
    correlation_id: str | None


class Conflict(Exception):
    """Another request or handler changed the same data first; try again."""


class Store:
    """Orders, stock levels and the audit log, shared by requests and handlers."""

    def __init__(self, stock: Mapping[str, int] = DEFAULT_STOCK) -> None:
        self.orders: dict[str, Order] = {}
        self.stock: dict[str, int] = dict(stock)
        #: Keyed by message id, so that an event delivered twice is recorded once.
        self.audit: dict[str, AuditEntry] = {}
        self.lock = threading.Lock()


class Session:
    """A unit of work: reads see the store plus this session's changes; ``commit`` applies
    them all at once, or raises :class:`Conflict` and applies none."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._saved: dict[str, Order] = {}
        self._stock_changes: dict[str, int] = {}

    def get(self, order_id: str) -> Order | None:
        """A copy of the order: change it, then :meth:`save` it."""
        if order_id in self._saved:
            return self._saved[order_id].model_copy()
        with self.store.lock:
            found = self.store.orders.get(order_id)
        return found.model_copy() if found is not None else None

    def save(self, order: Order) -> None:
        self._saved[order.order_id] = order.model_copy()

    def take_stock(self, item: str, quantity: int) -> bool:
        """Take ``quantity`` items out of stock; ``False`` if there are not enough."""
        with self.store.lock:
            available = self.store.stock.get(item, 0) + self._stock_changes.get(item, 0)
        if available < quantity:
            return False
        self._stock_changes[item] = self._stock_changes.get(item, 0) - quantity
        return True

    def return_stock(self, item: str, quantity: int) -> None:
        self._stock_changes[item] = self._stock_changes.get(item, 0) + quantity

    def commit(self) -> None:
        with self.store.lock:
            for order_id, order in self._saved.items():
                current = self.store.orders.get(order_id)
                if (current.version if current is not None else 0) != order.version:
                    raise Conflict(f"order {order_id} was changed by someone else")
            for item, change in self._stock_changes.items():
                if self.store.stock.get(item, 0) + change < 0:
                    raise Conflict(f"not enough {item} in stock any more")
            for order_id, order in self._saved.items():
                order.version += 1
                self.store.orders[order_id] = order
            for item, change in self._stock_changes.items():
                self.store.stock[item] = self.store.stock.get(item, 0) + change
        self._saved.clear()
        self._stock_changes.clear()


store = Store()


def get_store() -> Store:
    """The app's store. Tests replace it with ``app.dependency_overrides[get_store]``."""
    return store


def get_session(store: Annotated[Store, Depends(get_store)]) -> Iterator[Session]:
    """One session per request or per event; committed only if the endpoint or handler
    succeeds. The same dependency serves routes and handlers."""
    session = Session(store)
    yield session
    session.commit()


StoreDep = Annotated[Store, Depends(get_store)]
# scope="function": in a route, commit when the endpoint returns, before the response and so
# before the request's events are sent. (Handlers always work this way.)
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


# Event handlers.

events = EventRouter(prefix="orders", tags=["orders"])

# What this service publishes: "orders.placed" and so on, with their models.
events.publishes("placed", OrderPlaced)
events.publishes("cancelled", OrderCancelled)
events.publishes("stock_reserved", StockReserved)


@events.on("placed")
async def reserve_stock(event: OrderPlaced, session: SessionDep, bus: Bus) -> None:
    """Reserve the order's items, then announce it."""
    order = session.get(event.order_id)
    if order is None or order.status != "placed":
        return  # unknown, cancelled meanwhile, or handled already: events may come twice
    if session.take_stock(order.item, order.quantity):
        order.status = "reserved"
        order.stock_reserved = True
        # Sent once this handler has returned and its session has committed.
        await bus.publish(
            StockReserved(order_id=order.order_id, item=order.item, quantity=order.quantity)
        )
    else:
        order.status = "out_of_stock"
    session.save(order)


@events.on("stock_reserved")
def send_confirmation(event: StockReserved, session: SessionDep) -> None:
    """A plain ``def`` handler runs in a worker thread, so blocking calls (an e-mail
    client, say) do not hold up the other handlers."""
    order = session.get(event.order_id)
    if order is None or order.status != "reserved" or order.confirmation_sent:
        return
    # A real service would send the e-mail here.
    order.confirmation_sent = True
    session.save(order)


@events.on("cancelled")
async def release_stock(event: OrderCancelled, session: SessionDep) -> None:
    """Put a cancelled order's items back in stock."""
    order = session.get(event.order_id)
    if order is None or not order.stock_reserved:
        return
    session.return_stock(order.item, order.quantity)
    order.stock_reserved = False
    session.save(order)


@events.on("#")  # with the router's prefix: "orders.#", every event of this router
async def audit(event: dict[str, Any], message: Message, store: StoreDep) -> None:
    """Record every order event, once per message id."""
    order_id = event.get("order_id")
    with store.lock:
        store.audit[message.id] = AuditEntry(
            event=message.name,
            order_id=order_id if isinstance(order_id, str) else None,
            correlation_id=message.correlation_id,
        )


# HTTP endpoints.


class PlaceOrder(BaseModel):
    #: Your own id for the order (letters, digits, ``-`` and ``_``); default: a new one.
    order_id: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$"
    )
    item: str
    quantity: int = Field(gt=0, le=100)


class OrderAccepted(BaseModel):
    order_id: str
    status: OrderStatus


api = APIRouter()


@api.post("/orders", status_code=202)
async def place_order(body: PlaceOrder, session: SessionDep, bus: Bus) -> OrderAccepted:
    """Accept an order; its stock is reserved in the background."""
    if body.item not in session.store.stock:
        raise HTTPException(status_code=422, detail=f"unknown item {body.item!r}")
    order_id = body.order_id or uuid.uuid4().hex
    if session.get(order_id) is not None:
        raise HTTPException(status_code=409, detail=f"order {order_id!r} exists already")
    order = Order(order_id=order_id, item=body.item, quantity=body.quantity)
    session.save(order)
    # Held until the request succeeds: a failing request publishes nothing.
    placed = OrderPlaced(order_id=order.order_id, item=order.item, quantity=order.quantity)
    await bus.publish(placed)
    return OrderAccepted(order_id=order.order_id, status=order.status)


@api.post("/orders/{order_id}/cancel", status_code=202)
async def cancel_order(order_id: str, session: SessionDep, bus: Bus) -> OrderAccepted:
    order = session.get(order_id)
    if order is None:
        raise HTTPException(status_code=404, detail="no such order")
    if order.status == "cancelled":
        raise HTTPException(status_code=409, detail="the order is already cancelled")
    order.status = "cancelled"
    session.save(order)
    # A name and a dict work too: the dict is validated against the declared model.
    await bus.publish("orders.cancelled", {"order_id": order_id, "reason": "customer request"})
    return OrderAccepted(order_id=order_id, status=order.status)


@api.get("/orders/{order_id}")
def read_order(order_id: str, store: StoreDep) -> Order:
    with store.lock:
        order = store.orders.get(order_id)
    if order is None:
        raise HTTPException(status_code=404, detail="no such order")
    return order


@api.get("/health")
def health(request: Request) -> dict[str, str]:
    return {"status": "ok", "bus": get_bus(request.app).state.value}


async def conflict_handler(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


def create_app(url: str | None = None, *, tracing: bool | Tracing = False) -> FastAPI:
    """A new app with its own bus (a bus runs once, so tests make one app per test);
    ``tracing``: trace it with OpenTelemetry (docs/observability.md)."""
    app = FastAPI(title="Orders")
    app.include_router(api)
    app.add_exception_handler(Conflict, conflict_handler)
    app.include_extension(
        BusExtension(
            url or os.environ.get("FASTAPI_BUS_URL", "memory://"),
            service="shop",
            routers=[events],
            tracing=tracing,
        )
    )
    return app


app = create_app()
