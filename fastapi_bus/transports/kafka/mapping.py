"""A :class:`~fastapi_bus.Message` as a Kafka record, and back.

The body is the record's value, as it is; the message's fields travel as record headers named
``bus-…`` and its own headers as record headers of their names, so other Kafka programs can
read and write the bus's topics. Decoding never fails: a record without the bus's headers
becomes a message with its value as the body, which the handler's validation turns into a dead
letter with the reason if it is not what the handler takes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime, timezone

from fastapi_bus.core.messages import JSON, Message, new_id

__all__ = ["DUE", "KEY_HEADER", "TO", "decode", "encode", "partition_key"]

#: The message header that sets a message's partition key (such as an order id).
KEY_HEADER = "partition-key"

_ID, _NAME, _AT = "bus-id", "bus-name", "bus-at"
_CORRELATION, _CAUSATION = "bus-correlation-id", "bus-causation-id"
_ATTEMPT, _TYPE, _REDELIVERED = "bus-attempt", "bus-content-type", "bus-redelivered"
#: Headers of a delayed record: the topic it goes to, and when (epoch milliseconds).
TO, DUE = "bus-to", "bus-due"
_OURS = "bus-"

Headers = list[tuple[str, bytes]]


def encode(message: Message) -> Headers:
    """The record headers that carry ``message``'s fields (its body is the record's value)."""
    published_at = message.published_at
    if published_at.tzinfo is None:
        published_at = published_at.replace(tzinfo=timezone.utc)
    headers: Headers = [
        (_ID, message.id.encode()),
        (_NAME, message.name.encode()),
        (_AT, published_at.isoformat().encode()),
    ]
    if message.correlation_id is not None:
        headers.append((_CORRELATION, message.correlation_id.encode()))
    if message.causation_id is not None:
        headers.append((_CAUSATION, message.causation_id.encode()))
    if message.attempt != 1:
        headers.append((_ATTEMPT, str(message.attempt).encode()))
    if message.content_type != JSON:
        headers.append((_TYPE, message.content_type.encode()))
    if message.redelivered:
        headers.append((_REDELIVERED, b"1"))
    headers += [(key, value.encode()) for key, value in message.headers.items()]
    return headers


def partition_key(message: Message) -> bytes:
    """The record key of ``message``: its ``partition-key`` header, else its event name.

    Records with one key go to one partition, so they keep their order: by default every
    event of one name stays in publish order; a key per aggregate (an order id) spreads one
    event over the partitions and keeps each aggregate's events in order."""
    return (message.headers.get(KEY_HEADER) or message.name).encode()


def decode(value: bytes | None, headers: Sequence[tuple[str, bytes]], *, name: str = "") -> Message:
    """The message of a record; ``name`` is the event name to assume if it carries none."""
    ours: dict[str, str] = {}
    theirs: dict[str, str] = {}
    for key, raw in headers:
        text = (raw or b"").decode("utf-8", "replace")
        if key.startswith(_OURS):
            ours[key] = text
        else:
            theirs[key] = text
    published_at: datetime | None = None
    with contextlib.suppress(KeyError, ValueError):
        published_at = datetime.fromisoformat(ours[_AT])
        if published_at.tzinfo is None:
            published_at = published_at.replace(tzinfo=timezone.utc)
    attempt = int(ours[_ATTEMPT]) if ours.get(_ATTEMPT, "").isdigit() else 1
    return Message(
        name=ours.get(_NAME) or name,
        body=value or b"",
        id=ours.get(_ID) or new_id(),
        headers=theirs,
        correlation_id=ours.get(_CORRELATION),
        causation_id=ours.get(_CAUSATION),
        published_at=published_at or datetime.now(timezone.utc),
        attempt=max(attempt, 1),
        content_type=ours.get(_TYPE) or JSON,
        redelivered=ours.get(_REDELIVERED) == "1",
    )
