"""The outbox table: what it holds, and a message as a row and back."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

from fastapi_bus.core.messages import Message

__all__ = ["outbox_table", "row_values", "to_message"]


def outbox_table(metadata: MetaData, name: str) -> Table:
    """The outbox table ``name`` in ``metadata``.

    Rows are sent in ``id`` order; ``ordering_key`` keeps the order of the events of one
    aggregate across relays; ``claimed_by``/``claimed_until`` say which relay is sending a row,
    and ``sent_at`` that it was sent (sent rows are deleted later, on a schedule).
    """
    return Table(
        name,
        metadata,
        # A 64-bit key everywhere but SQLite, where only INTEGER is the auto-increasing row id.
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("message_id", String(64), nullable=False),
        Column("name", String(255), nullable=False),
        Column("body", LargeBinary, nullable=False),
        Column("headers", Text, nullable=False, default="{}"),
        Column("correlation_id", String(255)),
        Column("causation_id", String(255)),
        Column("published_at", DateTime(timezone=True), nullable=False),
        Column("attempt", Integer, nullable=False, default=1),
        Column("content_type", String(255), nullable=False),
        Column("delay", Float),
        Column("ordering_key", String(255)),
        Column("claimed_by", String(64)),
        Column("claimed_until", DateTime(timezone=True)),
        Column("sent_at", DateTime(timezone=True)),
        Index(f"ix_{name}_unsent", "sent_at", "id"),
        Index(f"ix_{name}_ordering_key", "ordering_key"),
    )


def row_values(message: Message, delay: float | None, key: str | None) -> dict[str, Any]:
    """The columns of the row that keeps ``message``."""
    return {
        "message_id": message.id,
        "name": message.name,
        "body": message.body,
        "headers": json.dumps(message.headers),
        "correlation_id": message.correlation_id,
        "causation_id": message.causation_id,
        "published_at": message.published_at,
        "attempt": message.attempt,
        "content_type": message.content_type,
        "delay": delay,
        "ordering_key": key,
    }


def _utc(value: datetime) -> datetime:
    # SQLite gives naive datetimes back, in the UTC they were written in.
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def to_message(row: Any) -> Message:
    """The message a row keeps."""
    return Message(
        name=row.name,
        body=row.body,
        id=row.message_id,
        headers=json.loads(row.headers),
        correlation_id=row.correlation_id,
        causation_id=row.causation_id,
        published_at=_utc(row.published_at),
        attempt=row.attempt,
        content_type=row.content_type,
    )
