"""The events of the orders service: plain pydantic models."""

from __future__ import annotations

from pydantic import BaseModel, Field


class OrderPlaced(BaseModel):
    """A customer placed an order; its stock is not reserved yet."""

    order_id: str
    item: str
    quantity: int = Field(gt=0)


class OrderCancelled(BaseModel):
    """A customer cancelled an order; any stock it reserved goes back."""

    order_id: str
    reason: str


class StockReserved(BaseModel):
    """The items of an order were taken out of stock for it."""

    order_id: str
    item: str
    quantity: int = Field(gt=0)
