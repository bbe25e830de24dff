"""A :class:`~fastapi_bus.Message` as a Kafka record, and back.

The body is the record's value, as it is; the message's fields travel as record headers named
``bus-…`` and its own headers as record headers of their names, so other Kafka programs can
read and write the bus's topics. Decoding never fails: a record without the bus's headers
becomes a message with its value as the body, which the handler's validation turns into a dead
letter with the reason if it is not what the handler takes. A record whose headers the bus
cannot read (a ``bus-attempt`` that is not a number, a header that is not UTF-8 text) is
malformed: :func:`read` says why, and the consumer dead-letters it with that reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from math import modf

from fastapi_bus.core.messages import JSON, Message, new_id, publish_timestamp

__all__ = ["DUE", "KEY_HEADER", "TO", "decode", "encode", "encode_record", "partition_key", "read"]

#: The message header that sets a message's partition key (such as an order id).
KEY_HEADER = "partition-key"

_ID, _NAME, _AT = "bus-id", "bus-name", "bus-at"
_CORRELATION, _CAUSATION = "bus-correlation-id", "bus-causation-id"
_ATTEMPT, _TYPE, _REDELIVERED = "bus-attempt", "bus-content-type", "bus-redelivered"
#: Headers of a delayed record: the topic it goes to, and when (epoch milliseconds).
TO, DUE = "bus-to", "bus-due"
_OURS = "bus-"
#: The ``bus-`` headers a record's message is read from, each with the field it holds.
_F_ID, _F_NAME, _F_AT, _F_CORRELATION, _F_CAUSATION, _F_ATTEMPT, _F_TYPE, _F_REDELIVERED = range(8)
_FIELDS = {
    _ID: _F_ID,
    _NAME: _F_NAME,
    _AT: _F_AT,
    _CORRELATION: _F_CORRELATION,
    _CAUSATION: _F_CAUSATION,
    _ATTEMPT: _F_ATTEMPT,
    _TYPE: _F_TYPE,
    _REDELIVERED: _F_REDELIVERED,
}
_fromisoformat = datetime.fromisoformat
#: How many bytes of a malformed header a dead-letter reason shows.
_SHOWN = 60

Headers = list[tuple[str, bytes]]


#: Event names encoded once (a process publishes few names, each many times).
_names: dict[str, bytes] = {}
#: How many encoded names :data:`_names` keeps.
_NAMES_KEPT = 1024


def _name_bytes(name: str) -> bytes:
    encoded = _names.get(name)
    if encoded is None:
        encoded = name.encode()
        if len(_names) < _NAMES_KEPT:
            _names[name] = encoded
    return encoded


#: The last whole second :func:`_time_text` wrote, and its text up to the seconds (one tuple,
#: replaced at once, so that threads publishing together never see half of it).
_last_second: tuple[float, bytes] = (-1.0, b"")


def _time_text(at: float) -> bytes:
    """``datetime.fromtimestamp(at, timezone.utc).isoformat().encode()``, at a fraction of the
    cost: the date and time up to the seconds are made once per second, and the microseconds
    are rounded as ``fromtimestamp`` rounds them (half to even), so the text reads back as the
    very ``published_at`` of the message."""
    global _last_second
    fraction, whole = modf(at)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole += 1.0
        micros -= 1_000_000
    elif micros < 0:
        whole -= 1.0
        micros += 1_000_000
    second, prefix = _last_second
    if second != whole:
        prefix = datetime.fromtimestamp(whole, timezone.utc).isoformat()[:19].encode()
        _last_second = (whole, prefix)
    if micros:
        return b"%s.%06d+00:00" % (prefix, micros)
    return prefix + b"+00:00"


def encode(message: Message) -> Headers:
    """The record headers that carry ``message``'s fields (its body is the record's value)."""
    return encode_record(message)[0]


def encode_record(message: Message) -> tuple[Headers, bytes]:
    """The record headers that carry ``message``'s fields, and its record key
    (:func:`partition_key`): what publishing needs, reading the message once."""
    # A message keeps its publish time as a number until someone reads it as a datetime;
    # written from the number, the datetime is not made at all.
    at = publish_timestamp(message)
    if at is not None:
        at_text = _time_text(at)
    else:
        published_at = message.published_at
        if published_at.tzinfo is None:
            published_at = published_at.replace(tzinfo=timezone.utc)
        at_text = published_at.isoformat().encode()
    name = _name_bytes(message.name)
    headers: Headers = [(_ID, message.id.encode()), (_NAME, name), (_AT, at_text)]
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
    theirs = message.headers
    if not theirs:
        return headers, name
    headers += [(key, value.encode()) for key, value in theirs.items()]
    return headers, _record_key(theirs, name)


def partition_key(message: Message) -> bytes:
    """The record key of ``message``: its ``partition-key`` header, else its event name.

    Records with one key go to one partition, so they keep their order: by default every
    event of one name stays in publish order; a key per aggregate (an order id) spreads one
    event over the partitions and keeps each aggregate's events in order."""
    return _record_key(message.headers, _name_bytes(message.name))


def _record_key(headers: Mapping[str, str], name: bytes) -> bytes:
    """The ``partition-key`` header of a message with these ``headers``, else its event
    ``name`` (as bytes)."""
    key = headers.get(KEY_HEADER)
    return key.encode() if key else name


def decode(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]], *, name: str = ""
) -> Message:
    """The message of a record; ``name`` is the event name to assume if it carries none.

    Never fails: a malformed header is read as well as it can be (see :func:`read`)."""
    return read(value, headers, name=name)[0]


def _shown(raw: bytes) -> str:
    return repr(raw if len(raw) <= _SHOWN else raw[:_SHOWN] + b"...")


def read(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]], *, name: str = ""
) -> tuple[Message, str | None]:
    """The message of a record, and why the record is malformed (``None`` if it is not).

    A record is malformed if a ``bus-…`` header does not hold what the bus writes there (UTF-8
    text; a whole number of 1 or more for the attempt; an ISO 8601 time), or if one of its
    own headers is not UTF-8 text. The message is still made, with the malformed header's
    field as if it were missing (and a header's text decoded with U+FFFD for bad bytes), so
    that it can be shown and dead-lettered."""
    if len(headers) == 3:
        # What most records carry (a first delivery, JSON, no ids of a cause): read at once.
        (k_id, r_id), (k_name, r_name), (k_at, r_at) = headers
        if k_id == _ID and k_name == _NAME and k_at == _AT and r_id and r_name and r_at:
            try:
                the_time = _fromisoformat(r_at.decode())
                the_name, the_id = r_name.decode(), r_id.decode()
            except ValueError:  # UnicodeDecodeError too: read below, to say what is wrong
                pass
            else:
                if the_time.tzinfo is None:
                    the_time = the_time.replace(tzinfo=timezone.utc)
                # No headers: the message makes its (empty) dict if someone reads them.
                return Message(the_name, value or b"", the_id, None, None, None, the_time), None
    message_id = message_name = correlation_id = causation_id = None
    content_type = JSON
    published_at: datetime | None = None
    attempt = 1
    redelivered = False
    theirs: dict[str, str] = {}
    problems: list[str] | None = None
    fields = _FIELDS
    for key, raw in headers:
        if raw is None:
            raw = b""
        field = fields.get(key)
        if field is None:
            if key.startswith(_OURS):
                continue  # a newer version's: not this version's business
            try:
                theirs[key] = raw.decode()
            except UnicodeDecodeError:
                theirs[key] = raw.decode("utf-8", "replace")
                problems = problems or []
                problems.append(f"header {key!r} is not UTF-8 text: {_shown(raw)}")
            continue
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            problems = problems or []
            problems.append(f"header {key!r} is not UTF-8 text: {_shown(raw)}")
            if field == _F_ID:
                # Kept, so the message can be found and replayed by it.
                message_id = raw.decode("utf-8", "replace")
            continue
        # In the order of how often records carry them.
        if field == _F_ID:
            message_id = text
        elif field == _F_NAME:
            message_name = text
        elif field == _F_AT:
            try:
                published_at = datetime.fromisoformat(text)
            except ValueError:
                problems = problems or []
                problems.append(f"header {key!r} is not an ISO 8601 time: {_shown(raw)}")
        elif field == _F_CORRELATION:
            correlation_id = text
        elif field == _F_CAUSATION:
            causation_id = text
        elif field == _F_ATTEMPT:
            # ASCII digits only: int() takes other scripts' digits, and ``str.isdigit`` passes
            # characters (such as "²") that int() refuses.
            if 0 < len(raw) <= 9 and raw.isdigit() and int(raw) >= 1:
                attempt = int(raw)
            else:
                problems = problems or []
                problems.append(f"header {key!r} is not a whole number of 1 or more: {_shown(raw)}")
        elif field == _F_TYPE:
            content_type = text or JSON
        elif raw in (b"1", b"0"):  # _F_REDELIVERED
            redelivered = raw == b"1"
        else:
            problems = problems or []
            problems.append(f"header {key!r} is not 1 or 0: {_shown(raw)}")
    if published_at is None:
        published_at = datetime.now(timezone.utc)
    elif published_at.tzinfo is None:
        published_at = published_at.replace(tzinfo=timezone.utc)
    message = Message(
        name=message_name or name,
        body=value or b"",
        id=message_id or new_id(),
        headers=theirs,
        correlation_id=correlation_id,
        causation_id=causation_id,
        published_at=published_at,
        attempt=attempt,
        content_type=content_type,
        redelivered=redelivered,
    )
    return message, "; ".join(problems) if problems else None
