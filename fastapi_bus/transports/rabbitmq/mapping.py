"""A :class:`~fastapi_bus.Message` as an AMQP message, and back.

Every field that AMQP has a property for travels in it (id, name as ``type``, correlation id,
content type, timestamp); the rest travels in headers of our own, which never reach
``Message.headers``. Decoding is lenient, because foreign producers publish to the same queues.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq
from aiormq.abc import DeliveredMessage

from fastapi_bus.core.messages import JSON, Message, new_id
from fastapi_bus.core.types import Headers

#: Our headers for what AMQP has no property for. They never reach ``Message.headers``.
CAUSATION_HEADER = "x-bus-causation-id"
ATTEMPT_HEADER = "x-bus-attempt"
PUBLISHED_AT_HEADER = "x-bus-published-at"
_OWN_HEADERS = frozenset({CAUSATION_HEADER, ATTEMPT_HEADER, PUBLISHED_AT_HEADER})
#: Headers RabbitMQ adds when it dead-letters or redelivers; not the application's business.
_BROKER_HEADERS = frozenset({"x-death", "x-delivery-count"})
_BROKER_PREFIXES = ("x-first-death-", "x-last-death-")
_PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def encode(message: Message) -> aiormq.spec.Basic.Properties:
    """The properties (and our headers) of the persistent AMQP message for ``message``; its
    body is ``message.body``. Built straight as the frame's properties: publishing needs no
    intermediate message object."""
    published_at = _utc(message.published_at)
    headers: dict[str, Any] = {
        **message.headers,
        ATTEMPT_HEADER: message.attempt,
        # The AMQP timestamp has whole seconds only.
        PUBLISHED_AT_HEADER: published_at.isoformat(),
    }
    if message.causation_id is not None:
        headers[CAUSATION_HEADER] = message.causation_id
    return aiormq.spec.Basic.Properties(
        headers=headers,
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        message_id=message.id,
        message_type=message.name,
        timestamp=published_at,
        delivery_mode=_PERSISTENT,
    )


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (bool, int, float, datetime)):
        return str(value)
    return None  # tables and arrays have no place in text headers


def decode(incoming: aio_pika.abc.AbstractIncomingMessage) -> Message:
    """The :class:`~fastapi_bus.Message` in a delivery, with defaults for what is missing."""
    return _message(
        incoming.body,
        incoming.headers,
        incoming.timestamp,
        incoming.type,
        incoming.routing_key,
        incoming.message_id,
        incoming.correlation_id,
        incoming.content_type,
        bool(incoming.redelivered),
    )


def decode_delivered(delivered: DeliveredMessage) -> Message:
    """:func:`decode` for aiormq's delivery, read straight from the frame's properties."""
    properties = delivered.header.properties
    return _message(
        delivered.body,
        properties.headers,
        properties.timestamp,
        properties.message_type,
        delivered.routing_key,
        properties.message_id,
        properties.correlation_id,
        properties.content_type,
        bool(delivered.redelivered),
    )


def _message(
    body: bytes,
    raw: Any,
    timestamp: Any,
    name: str | None,
    routing_key: str | None,
    message_id: str | None,
    correlation_id: str | None,
    content_type: str | None,
    redelivered: bool,
) -> Message:
    raw = raw or {}
    headers: Headers = {}
    for key, value in raw.items():
        # Other x-bus-* headers (dead-letter reasons, retry state) belong to the layers above.
        if key in _OWN_HEADERS or key in _BROKER_HEADERS or key.startswith(_BROKER_PREFIXES):
            continue
        text = _text(value)
        if text is not None:
            headers[key] = text

    published_at: datetime | None = None
    stamp = _text(raw.get(PUBLISHED_AT_HEADER))
    if stamp:
        with contextlib.suppress(ValueError):
            published_at = _utc(datetime.fromisoformat(stamp))
    if published_at is None and isinstance(timestamp, datetime):
        published_at = _utc(timestamp)

    attempt = 1
    with contextlib.suppress(TypeError, ValueError):
        attempt = max(1, int(str(raw.get(ATTEMPT_HEADER, 1))))

    # Foreign producers may leave out the type: the routing key is the next best name.
    return Message(
        name=name or routing_key or "",
        body=body,
        id=message_id or new_id(),
        headers=headers,
        correlation_id=correlation_id,
        causation_id=_text(raw.get(CAUSATION_HEADER)),
        published_at=published_at or datetime.now(timezone.utc),
        attempt=attempt,
        content_type=content_type or JSON,
        redelivered=redelivered,
    )
