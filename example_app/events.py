"""The events of the example: plain pydantic models, and the names they travel under."""

from __future__ import annotations

from pydantic import BaseModel, Field

from fastapi_bus import EventRouter


class OrderPlaced(BaseModel):
    """A customer placed an order; nothing is reserved or charged yet."""

    order_id: str
    item: str
    quantity: int = Field(gt=0)
    card: str = Field(description="The card to charge (the gateway is simulated).")


class StockReserved(BaseModel):
    """The items of an order were taken out of stock for it."""

    order_id: str
    item: str
    quantity: int = Field(gt=0)
    amount: int = Field(description="What to charge, in cents.")
    card: str


class PaymentCaptured(BaseModel):
    """The payment gateway charged the order."""

    order_id: str
    charge_id: str
    amount: int


class OrderConfirmed(BaseModel):
    """Paid for, and the confirmation e-mail is in the outbox."""

    order_id: str


class OrderFailed(BaseModel):
    """The order cannot go through: out of stock, or the payment failed for good."""

    order_id: str
    reason: str


class ChatMessage(BaseModel):
    """Someone said something in a chat room."""

    room: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")
    user: str = Field(min_length=1, max_length=40)
    text: str = Field(min_length=1, max_length=2000)


class RoomPresence(BaseModel):
    """Who is in a room now (sent when someone joins or leaves)."""

    room: str
    users: list[str]


#: What the example publishes, under which name. Handlers subscribe to these names.
catalog = EventRouter()
catalog.publishes("orders.placed", OrderPlaced)
catalog.publishes("orders.stock_reserved", StockReserved)
catalog.publishes("orders.payment_captured", PaymentCaptured)
catalog.publishes("orders.confirmed", OrderConfirmed)
catalog.publishes("orders.failed", OrderFailed)
catalog.publishes("chat.message", ChatMessage)
catalog.publishes("chat.presence", RoomPresence)
