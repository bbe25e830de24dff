"""Publishing: publishers, and the outboxes that hold events until their unit of work succeeds.

Events published while handling an HTTP request (or an event) are held in an outbox and sent
only when that work succeeds: for a request, when the endpoint finished without an exception
and the response status is below 400, before the response goes out (so a 2xx means the broker
has the events); for a handler, when it returns, before its message is acknowledged.
"""

from __future__ import annotations

import contextvars
import enum
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol

from pydantic import BaseModel

from fastapi_bus.core.exceptions import PublishError
from fastapi_bus.core.messages import Message

__all__ = ["HandlerWork", "Outbox", "Publisher", "Sender", "current_publisher"]


class Sender(Protocol):
    """What publishers need from the running bus: encode an event, send a message."""

    def encode(
        self,
        event: BaseModel | str,
        payload: BaseModel | Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> Message: ...

    async def send_message(self, message: Message, *, delay: float | None = None) -> None: ...


_current: contextvars.ContextVar[Publisher | None] = contextvars.ContextVar(
    "fastapi_bus_publisher", default=None
)


class _OutboxState(enum.Enum):
    OPEN = "open"
    SENT = "sent"
    DISCARDED = "discarded"


class Outbox:
    """Events held back until the unit of work (a request, a handler call) succeeds."""

    def __init__(self, bus: Sender) -> None:
        self._bus = bus
        self._pending: list[tuple[Message, float | None]] = []
        self.state = _OutboxState.OPEN

    @property
    def is_open(self) -> bool:
        return self.state is _OutboxState.OPEN

    def add(self, message: Message, delay: float | None) -> None:
        self._pending.append((message, delay))

    async def flush(self) -> None:
        """Send everything held, in order. Later publishes go straight out."""
        pending, self._pending = self._pending, []
        self.state = _OutboxState.SENT
        for message, delay in pending:
            await self._bus.send_message(message, delay=delay)

    def discard(self) -> int:
        """Drop everything held (the work failed). Returns how many events were dropped."""
        count = len(self._pending)
        self._pending = []
        self.state = _OutboxState.DISCARDED
        return count


class Publisher:
    """Publishes events, in the context of the request or message being handled.

    Get one by declaring a parameter ``bus: Bus`` in an endpoint or an event handler.
    """

    def __init__(
        self,
        bus: Sender,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self._bus = bus
        self.correlation_id = correlation_id
        self.causation_id = causation_id
        self._outbox = outbox

    async def publish(
        self,
        event: BaseModel | str,
        payload: BaseModel | Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        correlation_id: str | None = None,
        delay: float | None = None,
        immediate: bool = False,
    ) -> str:
        """Validate and publish one event; returns its message id.

        ```python
        await bus.publish(OrderPlaced(order_id="1", total=3.5))
        await bus.publish("OrderPlaced", {"order_id": "1", "total": 3.5})
        ```

        Args:
            event: a model instance (sent under the name registered for its class, else the
                class name), or an event name followed by ``payload``.
            payload: with a name: a dict (validated against the event's model) or a model.
            headers: extra text headers.
            correlation_id: default: the current request's or message's.
            delay: seconds; the event is delivered no earlier than this.
            immediate: send now, even inside a request or handler that may still fail.

        Raises:
            UnknownEventError: a name with a dict payload that no router declares.
            EventValidationError: the payload does not validate; nothing is sent.
            PublishError: the request or handler this publisher belongs to has failed (a
                background task of a 4xx response, say), or the bus is not running.
        """
        if delay is not None and delay < 0:
            raise ValueError("delay must not be negative")
        message = self._bus.encode(
            event,
            payload,
            headers=headers,
            correlation_id=correlation_id or self.correlation_id,
            causation_id=self.causation_id,
        )
        outbox = self._outbox
        if outbox is not None and not immediate:
            if outbox.is_open:
                outbox.add(message, delay)
                return message.id
            if outbox.state is _OutboxState.DISCARDED:
                raise PublishError(
                    f"not publishing {message.name!r}: the request or handler it belongs to "
                    "failed, so its events are not sent (pass immediate=True to send anyway)"
                )
        await self._bus.send_message(message, delay=delay)
        return message.id


def current_publisher() -> Publisher | None:
    """The publisher of the request or handler running in this context, if any."""
    return _current.get()


def bind_publisher(publisher: Publisher) -> contextvars.Token[Publisher | None]:
    return _current.set(publisher)


def unbind_publisher(token: contextvars.Token[Publisher | None]) -> None:
    _current.reset(token)


class HandlerWork:
    """The unit of work of one handler call: its publisher, whose events are held until the
    handler returns (published with the message as their cause)."""

    def __init__(self, bus: Sender, message: Message) -> None:
        self.outbox = Outbox(bus)
        self.publisher = Publisher(
            bus,
            correlation_id=message.correlation_id or message.id,
            causation_id=message.id,
            outbox=self.outbox,
        )
        self._token: contextvars.Token[Publisher | None] | None = None

    def __enter__(self) -> HandlerWork:
        self._token = bind_publisher(self.publisher)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            unbind_publisher(self._token)
            self._token = None

    def discard(self) -> None:
        self.outbox.discard()

    async def commit(self) -> None:
        await self.outbox.flush()
