"""Payments: a simulated gateway that fails now and then, and the handler that charges.

The gateway fails in three ways, so that retries, backoff and the dead-letter queue all show:

* at random, ``EXAMPLE_PAYMENT_FAILURE_RATE`` of the calls (default ``0.2``; ``0`` in tests)
  raise :class:`GatewayUnavailable`, which is retried: in process with backoff, then through
  the broker after a delay, then dead-lettered;
* the card ``4000 0000 0000 0119`` is unavailable on the first call for each order, so its
  payment goes through on a retry;
* the card ``4000 0000 0000 0002`` is always declined: :class:`CardDeclined` is not worth
  retrying, so the message goes to the dead-letter queue at once and the order fails.
"""

from __future__ import annotations

import os
import random
import uuid
from typing import Annotated

from fastapi import Depends
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from example_app.db import Order, Payment, SessionDep
from example_app.events import PaymentCaptured, StockReserved
from fastapi_bus import Bus, EventRouter, RetryPolicy

FAILURE_RATE_ENV = "EXAMPLE_PAYMENT_FAILURE_RATE"
DECLINED_CARD = "4000 0000 0000 0002"
FLAKY_CARD = "4000 0000 0000 0119"


class GatewayUnavailable(Exception):
    """The gateway did not answer: worth trying again."""


class CardDeclined(Exception):
    """The bank said no: trying again will not help."""


class PaymentGateway:
    """Charges cards, at most once per idempotency key (as real gateways do)."""

    def __init__(self, failure_rate: float | None = None) -> None:
        rate = os.environ.get(FAILURE_RATE_ENV, "0.2") if failure_rate is None else failure_rate
        self.failure_rate = float(rate)
        #: Charge id by idempotency key: what the gateway has charged.
        self.charges: dict[str, str] = {}
        #: Cards the bank declines.
        self.declined = {DECLINED_CARD.replace(" ", "")}
        #: Every call, charged or not (idempotency keys).
        self.calls: list[str] = []

    async def charge(self, card: str, amount: int, *, idempotency_key: str) -> str:
        """Charge ``amount`` cents; the same key again returns the first charge's id."""
        first_try = idempotency_key not in self.calls
        self.calls.append(idempotency_key)
        if idempotency_key in self.charges:
            return self.charges[idempotency_key]
        if card.replace(" ", "") in self.declined:
            raise CardDeclined(f"card ending {card[-4:]} was declined")
        if card.replace(" ", "") == FLAKY_CARD.replace(" ", "") and first_try:
            raise GatewayUnavailable("the gateway timed out (this card fails once)")
        if random.random() < self.failure_rate:
            raise GatewayUnavailable("the gateway timed out")
        self.charges[idempotency_key] = charge_id = f"ch_{uuid.uuid4().hex[:12]}"
        return charge_id


gateway = PaymentGateway()


def get_gateway() -> PaymentGateway:
    """The process's gateway client; tests override it."""
    return gateway


payments = EventRouter(
    prefix="orders",
    tags=["payments"],
    # Only an unavailable gateway (or a payment recorded by a concurrent delivery) is retried:
    # three calls, 0.2 s then 0.4 s apart, then two redeliveries through the broker, 1 s and
    # 3 s later, then the dead-letter queue. A declined card goes there at once.
    retry=RetryPolicy(
        attempts=3, backoff=0.2, delays=(1.0, 3.0), retry_on=(GatewayUnavailable, IntegrityError)
    ),
)


@payments.on("stock_reserved")
async def charge_payment(
    event: StockReserved,
    session: SessionDep,
    gateway: Annotated[PaymentGateway, Depends(get_gateway)],
    bus: Bus,
) -> None:
    """Charge the order once, however often this message is delivered.

    The order id is the gateway's idempotency key, so a second call charges nothing; and the
    payments table has one row per order, so a second delivery finds the first payment (or,
    if both run at once, the second commit fails on the unique constraint and is retried,
    then finds it)."""
    if await session.scalar(select(Payment).where(Payment.order_id == event.order_id)):
        return  # paid already: this is a redelivery
    charge_id = await gateway.charge(event.card, event.amount, idempotency_key=event.order_id)
    session.add(Payment(charge_id=charge_id, order_id=event.order_id, amount=event.amount))
    order = await session.get(Order, event.order_id)
    if order is not None and order.status in ("reserved", "failed"):
        # "failed": the payment was dead-lettered, then replayed, and went through this time.
        order.status, order.reason = "paid", None
    await bus.publish(
        PaymentCaptured(order_id=event.order_id, charge_id=charge_id, amount=event.amount)
    )
