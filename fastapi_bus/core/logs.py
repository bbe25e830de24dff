"""What the bus's log lines about a message carry, for formatters and structured loggers.

Every line about one message is logged with ``extra=message_extra(...)``, so its
:class:`logging.LogRecord` has these attributes (``None`` where unknown)::

    record.message_id      # Message.id
    record.event_name      # Message.name
    record.handler         # the handler's name, where one is involved
    record.correlation_id  # Message.correlation_id

A JSON formatter (docs/observability.md shows one) or ``%(message_id)s`` in a format string for
the ``fastapi_bus`` loggers can use them.
"""

from __future__ import annotations

from fastapi_bus.core.messages import Message

__all__ = ["LOG_FIELDS", "message_extra"]

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
