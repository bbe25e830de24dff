"""What the bus asks of a tracer (:class:`~fastapi_bus.telemetry.tracing.Tracing` makes one)."""

from __future__ import annotations

import abc
import contextlib

from fastapi_bus.core.messages import Message
from fastapi_bus.core.metrics import Metrics

__all__ = ["MessageTracer"]


class MessageTracer(Metrics, abc.ABC):
    """Makes the spans of one bus. Its metrics hooks annotate the current handler's span
    (failures, redeliveries, dead letters)."""

    @abc.abstractmethod
    def stamp(self, message: Message) -> Message:
        """At encoding, in the publisher's context: ``message`` carrying that context (the
        parent of its publish span), unless it carries one already."""

    @abc.abstractmethod
    def publishing(self, message: Message) -> contextlib.AbstractContextManager[Message]:
        """Around sending ``message``: its publish span; gives the message to send, which
        carries the span's context in its headers."""

    @abc.abstractmethod
    def processing(
        self, message: Message, handler: str, queue: str
    ) -> contextlib.AbstractContextManager[None]:
        """Around one delivery of ``message`` to ``handler``: its process span, a child of the
        publish span whose context the message carries."""
