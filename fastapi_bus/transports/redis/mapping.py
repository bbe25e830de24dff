"""A :class:`~fastapi_bus.Message` as one Redis value, and back.

A message travels as one binary-safe value: a line of JSON with its ids and headers, a newline,
then the body's bytes as they are. The same value is a stream entry's ``m`` field, a Pub/Sub
payload and a delayed message, so a message is encoded once however it travels.

Decoding never fails: foreign producers write to the same streams, and a value that is not ours
still becomes a message (its raw bytes as the body), which the handler's validation then turns
into a dead letter with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from fastapi_bus.core.messages import JSON, Message, new_id

__all__ = ["FIELD", "decode", "decode_fields", "encode"]

#: The stream field that holds an encoded message.
FIELD = b"m"


def encode(message: Message) -> bytes:
    """``message`` as one value: a JSON line of metadata, ``\\n``, the body."""
    published_at = message.published_at
    if published_at.tzinfo is None:
        published_at = published_at.replace(tzinfo=timezone.utc)
    meta: dict[str, Any] = {"id": message.id, "name": message.name, "at": published_at.isoformat()}
    if message.headers:
        meta["headers"] = message.headers
    if message.correlation_id is not None:
        meta["correlation_id"] = message.correlation_id
    if message.causation_id is not None:
        meta["causation_id"] = message.causation_id
    if message.attempt != 1:
        meta["attempt"] = message.attempt
    if message.content_type != JSON:
        meta["content_type"] = message.content_type
    if message.redelivered:
        meta["redelivered"] = True
    # Compact JSON escapes every newline, so the first b"\n" always ends the metadata.
    line = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()
    return line + b"\n" + message.body


_json = json.JSONDecoder().decode
_parse_time = datetime.fromisoformat
_UTC = timezone.utc


def decode(value: bytes, *, name: str = "", redelivered: bool = False) -> Message:
    """The message in ``value``; ``name`` is the event name to assume if it carries none."""
    end = value.find(b"\n")
    meta: Any = None
    if end >= 0:
        try:
            meta = _json(value[:end].decode())
        except ValueError:  # UnicodeDecodeError included: not ours
            meta = None
    if type(meta) is not dict:
        # Not ours: the whole value is the body.
        return Message(name=name, body=value, redelivered=redelivered)
    get = meta.get
    headers = get("headers")
    if headers is None:
        headers = {}
    elif type(headers) is dict:
        if not all(type(v) is str for v in headers.values()):
            headers = {k: v for k, v in headers.items() if type(v) is str}
    else:
        headers = {}
    published_at: datetime | None = None
    stamp = get("at")
    if type(stamp) is str:
        try:
            published_at = _parse_time(stamp)
        except ValueError:
            pass
        else:
            if published_at.tzinfo is None:
                published_at = published_at.replace(tzinfo=_UTC)
    attempt = get("attempt", 1)
    if type(attempt) is not int or attempt < 1:
        attempt = 1
    event = get("name")
    message_id = get("id")
    correlation_id = get("correlation_id")
    causation_id = get("causation_id")
    content_type = get("content_type")
    return Message(
        name=event if type(event) is str and event else name,
        body=value[end + 1 :],
        id=message_id if type(message_id) is str and message_id else new_id(),
        headers=headers,
        correlation_id=correlation_id if type(correlation_id) is str else None,
        causation_id=causation_id if type(causation_id) is str else None,
        published_at=published_at or datetime.now(_UTC),
        attempt=attempt,
        content_type=content_type if type(content_type) is str and content_type else JSON,
        redelivered=redelivered or get("redelivered") is True,
    )


def decode_fields(
    fields: Mapping[bytes, bytes], *, name: str = "", redelivered: bool = False
) -> Message:
    """The message in a stream entry. An entry written by someone else (no ``m`` field) gives
    a message whose body is its fields as JSON, so that nothing is dropped unseen."""
    value = fields.get(FIELD)
    if value is not None:
        return decode(value, name=name, redelivered=redelivered)
    as_text = {
        k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in fields.items()
    }
    return Message(name=name, body=json.dumps(as_text).encode(), redelivered=redelivered)
