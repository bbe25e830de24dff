"""What the bus's log lines about a message carry, for formatters and structured loggers.

Every line about one message is logged with ``extra=message_extra(...)``, so its
:class:`logging.LogRecord` has these attributes (``None`` where unknown)::

    record.message_id      # Message.id
    record.event_name      # Message.name
    record.handler         # the handler's name, where one is involved
    record.correlation_id  # Message.correlation_id

A JSON formatter (docs/observability.md shows one) or ``%(message_id)s`` in a format string for
the ``fastapi_bus`` loggers can use them. :class:`MessageLogFilter` adds the same attributes to
every line logged while a handler runs, your handler's own lines included.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable

from fastapi_bus.core.messages import Message

__all__ = [
    "LOG_FIELDS",
    "MessageLogFilter",
    "bind_delivery",
    "delivery_context",
    "message_extra",
    "unbind_delivery",
]

#: The attributes :func:`message_extra` adds to a log record.
LOG_FIELDS = ("message_id", "event_name", "handler", "correlation_id")


def message_extra(message: Message, handler: str | None = None) -> dict[str, str | None]:
    """The ``extra=`` of a log line about ``message`` (and the handler it is for)."""
    return {
        "message_id": message.id,
        "event_name": message.name,
        "handler": handler,
        "correlation_id": message.correlation_id,
    }


_delivery: contextvars.ContextVar[tuple[Message, str] | None] = contextvars.ContextVar(
    "fastapi_bus_delivery", default=None
)


def bind_delivery(message: Message, handler: str) -> contextvars.Token[tuple[Message, str] | None]:
    """``message`` is being handled by ``handler`` in this context (until unbound)."""
    return _delivery.set((message, handler))


#: Undoes :func:`bind_delivery` (the variable's own ``reset``: no call in between).
unbind_delivery: Callable[[contextvars.Token[tuple[Message, str] | None]], None] = _delivery.reset
#: What :func:`bind_delivery` sets, for a consumer's hot path to set ``(message, handler)``
#: itself.
delivery_context = _delivery


class _Readers:
    """Whether anything reads the delivery context: only a :class:`MessageLogFilter` does."""

    __slots__ = ("any",)

    def __init__(self) -> None:
        self.any = False


#: Consumers bind the delivery context only once a :class:`MessageLogFilter` exists (it turns
#: ``readers.any`` on for good): setting and resetting a context variable costs every message
#: about a tenth of a microsecond, for a context nothing else reads (the bus's own lines about
#: a message carry its ids in ``extra=`` either way).
readers = _Readers()


class MessageLogFilter(logging.Filter):
    """Adds the ids of the message being handled (``message_id``, ``event_name``, ``handler``,
    ``correlation_id``) to each record logged while a handler runs, where the record does not
    have them already. Add it to your log handler::

        handler.addFilter(MessageLogFilter())
    """

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        # From now on, consumers bind the delivery context (see ``readers``).
        readers.any = True

    def filter(self, record: logging.LogRecord) -> bool:
        current = _delivery.get()
        if current is not None:
            for key, value in message_extra(*current).items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        return True
