"""Orders: the HTTP endpoints, and the handlers that take an order from placed to confirmed.

``POST /orders`` stores the order and publishes ``orders.placed``, then answers 202 at once.
The rest happens in handlers, each in its own router:

* inventory: ``orders.placed`` → reserve the stock → ``orders.stock_reserved`` (or
  ``orders.failed``, out of stock);
* payments (``payments.py``): ``orders.stock_reserved`` → charge → ``orders.payment_captured``;
* notifications: ``orders.payment_captured`` → confirmation e-mail in the outbox →
  ``orders.confirmed``; ``orders.failed`` → an apology in the outbox;
* failures: a dead-lettered order message (a ``Fault``) → ``orders.failed``;
* history: every ``orders.*`` event becomes a line of the order's history.

Every event of an order carries the order's id as its correlation id, so a ``Fault`` tells
which order failed.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import select, update

from example_app.db import Email, HistoryEntry, Order, Payment, SessionDep, Stock
from example_app.events import (
    OrderConfirmed,
    OrderFailed,
    OrderPlaced,
    PaymentCaptured,
    StockReserved,
)
from example_app.payments import DECLINED_CARD
from fastapi_bus import Bus, EventRouter, Fault, Message

inventory = EventRouter(prefix="orders", tags=["inventory"])
notifications = EventRouter(prefix="orders", tags=["notifications"])
failures = EventRouter(tags=["failures"])
history = EventRouter(prefix="orders", tags=["history"])


@inventory.on("placed")
async def reserve_stock(event: OrderPlaced, session: SessionDep, bus: Bus) -> None:
    """Take the items out of stock, in one conditional UPDATE (no two orders get the last
    one), then ask for the payment."""
    order = await session.get(Order, event.order_id)
    if order is None or order.status != "placed":
        return  # handled already: events may come twice
    taken = await session.execute(
        update(Stock)
        .where(Stock.item == order.item, Stock.available >= order.quantity)
        .values(available=Stock.available - order.quantity)
        .returning(Stock.price)
    )
    price = taken.scalar_one_or_none()
    if price is None:
        order.status, order.reason = "failed", f"not enough {order.item} in stock"
        await bus.publish(OrderFailed(order_id=order.id, reason=order.reason))
        return
    order.status = "reserved"
    await bus.publish(
        StockReserved(
            order_id=order.id,
            item=order.item,
            quantity=order.quantity,
            amount=price * order.quantity,
            card=order.card,
        )
    )


@notifications.on("payment_captured")
async def send_confirmation(event: PaymentCaptured, session: SessionDep, bus: Bus) -> None:
    """Write the confirmation e-mail to the outbox (one per order), then confirm."""
    order = await session.get(Order, event.order_id)
    if order is None or order.status != "paid":
        return
    order.status = "confirmed"
    session.add(
        Email(
            order_id=order.id,
            kind="confirmation",
            subject=f"Order {order.id} confirmed",
            body=f"{order.quantity} x {order.item}, {event.amount / 100:.2f} charged.",
        )
    )
    await bus.publish(OrderConfirmed(order_id=order.id))


@notifications.on("failed")
async def send_apology(event: OrderFailed, session: SessionDep) -> None:
    exists = await session.scalar(
        select(Email).where(Email.order_id == event.order_id, Email.kind == "failure")
    )
    if exists is None and await session.get(Order, event.order_id) is not None:
        session.add(
            Email(
                order_id=event.order_id,
                kind="failure",
                subject=f"Order {event.order_id} could not go through",
                body=event.reason,
            )
        )


@failures.on(Fault)
async def fail_order(fault: Fault, session: SessionDep, bus: Bus) -> None:
    """A handler gave up on an order's message (it is in the dead-letter queue now): the
    order fails, with the reason. Replaying the message later may still complete it."""
    if not fault.event.startswith("orders.") or fault.correlation_id is None:
        return
    order = await session.get(Order, fault.correlation_id)
    if order is None or order.status in ("confirmed", "failed"):
        return
    order.status = "failed"
    order.reason = f"{fault.handler}: {fault.exception_message or fault.reason}"
    await bus.publish(OrderFailed(order_id=order.id, reason=order.reason))


@history.on("#")  # with the prefix: "orders.#", every order event
async def record_history(event: dict[str, Any], message: Message, session: SessionDep) -> None:
    """One history line per message id, so a redelivered event is recorded once."""
    order_id = event.get("order_id")
    if not isinstance(order_id, str) or await session.get(HistoryEntry, message.id) is not None:
        return
    if await session.get(Order, order_id) is None:
        return
    detail = event.get("reason") or event.get("charge_id") or ""
    session.add(
        HistoryEntry(message_id=message.id, order_id=order_id, event=message.name, detail=detail)
    )


# HTTP endpoints.


class PlaceOrder(BaseModel):
    #: Your own id for the order (letters, digits, ``-`` and ``_``); default: a new one.
    order_id: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$"
    )
    item: str
    quantity: int = Field(gt=0, le=100)
    card: str = Field(
        default="4242 4242 4242 4242",
        pattern=r"^[0-9 ]{12,23}$",
        description=f"Simulated: {DECLINED_CARD} is always declined.",
    )


class OrderAccepted(BaseModel):
    order_id: str
    status: str


class HistoryLine(BaseModel):
    event: str
    detail: str
    at: datetime


class OrderView(BaseModel):
    order_id: str
    item: str
    quantity: int
    status: str
    reason: str | None
    charge_id: str | None
    emails: list[str]
    history: list[HistoryLine]


api = APIRouter(tags=["orders"])


@api.post("/orders", status_code=202)
async def place_order(body: PlaceOrder, session: SessionDep, bus: Bus) -> OrderAccepted:
    """Accept an order; stock, payment and confirmation follow in the background."""
    if await session.get(Stock, body.item) is None:
        raise HTTPException(status_code=422, detail=f"unknown item {body.item!r}")
    order_id = body.order_id or uuid.uuid4().hex[:12]
    if await session.get(Order, order_id) is not None:
        raise HTTPException(status_code=409, detail=f"order {order_id!r} exists already")
    order = Order(id=order_id, item=body.item, quantity=body.quantity, card=body.card)
    session.add(order)
    placed = OrderPlaced(order_id=order_id, item=body.item, quantity=body.quantity, card=body.card)
    # Sent once the request succeeds (after the commit); the order's id correlates its events.
    await bus.publish(placed, correlation_id=order_id)
    return OrderAccepted(order_id=order_id, status="placed")


@api.get("/orders")
async def list_orders(session: SessionDep) -> list[OrderAccepted]:
    """The 20 most recent orders."""
    orders = await session.scalars(select(Order).order_by(Order.created_at.desc()).limit(20))
    return [OrderAccepted(order_id=order.id, status=order.status) for order in orders]


@api.get("/orders/{order_id}")
async def read_order(order_id: str, session: SessionDep) -> OrderView:
    """The order's state, and its history as the events land."""
    order = await session.get(Order, order_id)
    if order is None:
        raise HTTPException(status_code=404, detail="no such order")
    lines = await session.scalars(
        select(HistoryEntry).where(HistoryEntry.order_id == order_id).order_by(HistoryEntry.at)
    )
    emails = await session.scalars(select(Email.subject).where(Email.order_id == order_id))
    payment = await session.scalar(select(Payment).where(Payment.order_id == order_id))
    return OrderView(
        order_id=order.id,
        item=order.item,
        quantity=order.quantity,
        status=order.status,
        reason=order.reason,
        charge_id=payment.charge_id if payment else None,
        emails=list(emails),
        history=[HistoryLine(event=e.event, detail=e.detail, at=e.at) for e in lines],
    )
