"""What the bus asks of a tracer (:class:`~fastapi_bus.telemetry.tracing.Tracing` makes one)."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Protocol

from fastapi_bus.core.messages import Message
from fastapi_bus.core.metrics import Metrics

__all__ = ["Consume", "MessageTracer", "Send"]

#: A message consumer (what a transport calls): returning acknowledges.
Consume = Callable[[Message], Awaitable[None]]


class Send(Protocol):
    """Sends a message (the transport's ``publish``)."""

    def __call__(self, message: Message, *, delay: float | None = None) -> Awaitable[None]: ...


class MessageTracer(Metrics, abc.ABC):
    """Makes the spans of one bus. Its metrics hooks annotate the current handler's span
    (failures, redeliveries, dead letters)."""

    @abc.abstractmethod
    def stamp(self, message: Message) -> Message:
        """At encoding, in the publisher's context: ``message`` carrying that context (the
        parent of its publish span), unless it carries one already."""

    @abc.abstractmethod
    async def send(self, message: Message, delay: float | None, send: Send) -> None:
        """Send ``message`` with ``send`` in its publish span, the span's context added to the
        message's headers."""

    @abc.abstractmethod
    async def process(self, message: Message, handler: str, queue: str, consume: Consume) -> None:
        """Run one delivery of ``message`` to ``handler`` (``consume``) in its process span, a
        child of the publish span whose context the message carries."""
