"""The wire message.

A :class:`Message` is what travels through a transport: a body of bytes plus the ids and headers
that every broker can carry. Transports see only messages; models, routing and dependencies live
above them.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from datetime import datetime, timezone
from typing import Any

from fastapi_bus.core.types import Headers

__all__ = ["JSON", "Message", "MessageState", "message_from_state", "message_state", "new_id"]

JSON = "application/json"


#: Ids made ahead, from one read of the OS's random source: reading 16 bytes for every id cost
#: a system call per publish. A deque, because ``popleft`` is atomic: threads never get the
#: same id.
_ids: collections.deque[str] = collections.deque()
#: How many ids one read of the OS's random source makes.
_IDS_PER_READ = 64


def new_id() -> str:
    """A new random message id (32 hex digits: 128 random bits from ``os.urandom``)."""
    try:
        return _ids.popleft()
    except IndexError:
        digits = os.urandom(16 * _IDS_PER_READ).hex()
        _ids.extend(digits[start : start + 32] for start in range(32, len(digits), 32))
        return digits[:32]


if hasattr(os, "register_at_fork"):
    # A forked child must not hand out the ids its parent also holds.
    os.register_at_fork(after_in_child=_ids.clear)


_now = time.time
_from_timestamp = datetime.fromtimestamp
_UTC = timezone.utc


class _Lazy:
    """The two fields of :class:`Message` made on first read: most messages are sent and
    handled without anyone reading their publish time as a ``datetime`` (a clock read as a
    number is a third of the cost), and most carry no headers. A message whose fields are all
    text, bytes and numbers holds no container, so the garbage collector leaves it alone (see
    :func:`message_state`)."""

    @property
    def headers(self) -> Headers:
        fields = self.__dict__
        headers: Headers | None = fields.get("_headers")
        if headers is None:
            # ``setdefault``: threads that read it first at once all get the same dict.
            headers = fields.setdefault("_headers", {})
        return headers

    @property
    def published_at(self) -> datetime:
        fields = self.__dict__
        at: datetime | float = fields["_published_at"]
        if at.__class__ is float:
            at = fields["_published_at"] = _from_timestamp(at, _UTC)
        return at  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True, init=False)
class Message(_Lazy):
    """One message as it travels: body bytes plus ids and headers.

    Handlers receive it by declaring a parameter of this type::

        @events.on("OrderPlaced")
        async def audit(event: OrderPlaced, msg: Message) -> None:
            log.info("order %s in message %s (attempt %d)", event.order_id, msg.id, msg.attempt)
    """

    #: The event name, used as the routing key (``"OrderPlaced"``, ``"orders.placed"``).
    name: str
    #: The encoded payload.
    body: bytes
    #: Unique per published event, and kept across retries and replays.
    id: str
    #: Application headers (text to text).
    headers: Headers
    #: Ties together everything caused by one request or one original event.
    correlation_id: str | None
    #: The id of the message whose handler published this one, if any.
    causation_id: str | None
    #: When the event was first published (UTC).
    published_at: datetime
    #: 1 on first delivery to a handler, counting up with every retry.
    attempt: int
    #: MIME type of ``body``.
    content_type: str
    #: True if the broker has delivered this message before (it was not acknowledged).
    redelivered: bool

    def __init__(
        self,
        name: str,
        body: bytes,
        id: str | None = None,
        headers: Headers | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        published_at: datetime | None = None,
        attempt: int = 1,
        content_type: str = JSON,
        redelivered: bool = False,
    ) -> None:
        # Written out rather than generated: the frozen dataclass's own ``__init__`` sets each
        # field through ``object.__setattr__``, which made a message cost three times as much
        # to build (every publish and every delivery builds one). One store per field is
        # cheaper still than ``__dict__.update`` with keywords. ``headers`` and
        # ``published_at`` are kept under names of their own, read through :class:`_Lazy`.
        fields = self.__dict__
        fields["name"] = name
        fields["body"] = body
        if id is None:
            try:
                id = _ids.popleft()  # ``new_id()``, without its call
            except IndexError:
                id = new_id()
        fields["id"] = id
        if headers is not None:
            fields["_headers"] = headers
        fields["correlation_id"] = correlation_id
        fields["causation_id"] = causation_id
        fields["_published_at"] = _now() if published_at is None else published_at
        fields["attempt"] = attempt
        fields["content_type"] = content_type
        fields["redelivered"] = redelivered

    def replace(self, **changes: object) -> Message:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


#: What :func:`message_state` gives: a message's fields as a dict, or with its headers as one
#: tuple of its fields and then its headers, key after value.
MessageState = dict[str, Any] | tuple[Any, ...]

#: The fields of a message other than its headers, as :class:`Message` keeps them.
_STORED = (
    "name",
    "body",
    "id",
    "correlation_id",
    "causation_id",
    "_published_at",
    "attempt",
    "content_type",
    "redelivered",
)
_HEADERS_AT = len(_STORED)

_new = object.__new__
_set = object.__setattr__


def message_state(message: Message) -> MessageState:
    """``message`` as plain data the garbage collector does not track (what the in-process
    broker keeps while a message waits in a queue), rebuilt by :func:`message_from_state` as
    a message of its own.

    A waiting :class:`Message` is an object the collector tracks: thousands of them waiting
    are carried into its oldest generation, and make it sweep everything the process holds,
    again and again. Its fields are text, bytes and numbers; a dict of them is not tracked.
    Headers are a dict, which would make it so: a message with headers waits as one flat tuple
    of text, bytes and numbers, which the collector lets go the first time it sees it.
    """
    fields = message.__dict__
    headers: Headers | None = fields.get("_headers")
    if headers is None:
        return fields.copy()
    if not headers:
        return {name: fields[name] for name in _STORED}
    flat = [fields[name] for name in _STORED]
    for key, value in headers.items():
        flat += (key, value)
    return tuple(flat)


def message_from_state(state: MessageState) -> Message:
    """The message :func:`message_state` made ``state`` of (once: it takes ``state`` over)."""
    message: Message = _new(Message)
    if isinstance(state, tuple):
        fields = dict(zip(_STORED, state[:_HEADERS_AT], strict=True))
        keys, values = state[_HEADERS_AT::2], state[_HEADERS_AT + 1 :: 2]
        fields["_headers"] = dict(zip(keys, values, strict=True))
        state = fields
    _set(message, "__dict__", state)
    return message
