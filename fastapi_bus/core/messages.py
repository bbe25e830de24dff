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

__all__ = [
    "JSON",
    "Message",
    "MessageState",
    "message_from_state",
    "message_state",
    "new_id",
    "publish_timestamp",
]

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
        # Cut into 32 digits each without a Python step per id.
        size = len(digits)
        cuts = map(slice, range(32, size, 32), range(64, size + 1, 32))
        _ids.extend(map(digits.__getitem__, cuts))
        return digits[:32]


if hasattr(os, "register_at_fork"):
    # A forked child must not hand out the ids its parent also holds.
    os.register_at_fork(after_in_child=_ids.clear)


_now = time.time
_from_timestamp = datetime.fromtimestamp
_UTC = timezone.utc


@dataclasses.dataclass(frozen=True, init=False)
class Message:
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
    headers: Headers = dataclasses.field(default_factory=dict)
    #: Ties together everything caused by one request or one original event.
    correlation_id: str | None = None
    #: The id of the message whose handler published this one, if any.
    causation_id: str | None = None
    #: When the event was first published (UTC).
    published_at: datetime = dataclasses.field(default_factory=lambda: datetime.now(_UTC))
    #: 1 on first delivery to a handler, counting up with every retry.
    attempt: int = 1
    #: MIME type of ``body``.
    content_type: str = JSON
    #: True if the broker has delivered this message before (it was not acknowledged).
    redelivered: bool = False

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
        # cheaper still than ``__dict__.update`` with keywords; a field with its default is
        # not stored (the class holds the default). ``headers`` and ``published_at`` are kept
        # under names of their own (see ``_headers`` and ``_published_at`` below).
        fields = self.__dict__
        fields["name"] = name
        fields["body"] = body
        if id is None:
            try:
                id = _ids.popleft()  # ``new_id()``, without its call
            except IndexError:
                id = new_id()
        fields["id"] = id
        fields["_published_at"] = _now() if published_at is None else published_at
        fields["content_type"] = content_type  # read at every delivery: always stored
        if headers is not None:
            fields["_headers"] = headers
        if correlation_id is not None:
            fields["correlation_id"] = correlation_id
        if causation_id is not None:
            fields["causation_id"] = causation_id
        if attempt != 1:
            fields["attempt"] = attempt
        if redelivered:
            fields["redelivered"] = redelivered

    def replace(self, **changes: object) -> Message:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _headers(message: Message) -> Headers:
    fields = message.__dict__
    headers: Headers | None = fields.get("_headers")
    if headers is None:
        # ``setdefault``: threads that read it first at once all get the same dict.
        headers = fields.setdefault("_headers", {})
    return headers


def _published_at(message: Message) -> datetime:
    fields = message.__dict__
    at: datetime | float = fields["_published_at"]
    if at.__class__ is float:
        at = fields["_published_at"] = _from_timestamp(at, _UTC)
    return at  # type: ignore[return-value]


def publish_timestamp(message: Message) -> float | None:
    """When ``message`` was first published, as a POSIX timestamp, while it keeps it as one (a
    message made in this process whose ``published_at`` nobody has read): a transport that
    writes the time as text can then do without the ``datetime``. ``None``: read
    ``published_at``."""
    at = message.__dict__["_published_at"]
    return at if at.__class__ is float else None


# Two fields are made on first read: most messages are sent and handled without anyone reading
# their publish time as a ``datetime`` (a clock read as a number is a third of the cost), and
# most carry no headers. A message whose fields are all text, bytes and numbers holds no
# container, so the garbage collector leaves a copy of them alone (see :func:`message_state`).
# Set on the class once the dataclass is made, so that its fields have no default.
Message.headers = property(_headers, doc="Application headers (text to text).")  # type: ignore[assignment]
Message.published_at = property(  # type: ignore[assignment]
    _published_at, doc="When the event was first published (UTC)."
)


#: What :func:`message_state` gives: a message's fields as a dict, or, with headers, one tuple:
#: the number of fields, the fields and then the headers, key after value.
MessageState = dict[str, Any] | tuple[Any, ...]

_new = object.__new__
#: Sets an object's ``__dict__`` (the attribute's own descriptor: a frozen dataclass refuses
#: ``setattr``).
_set_dict = Message.__dict__["__dict__"].__set__


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
        return {key: value for key, value in fields.items() if key != "_headers"}
    flat: list[Any] = [len(fields) - 1]
    for key, value in fields.items():
        if key != "_headers":
            flat += (key, value)
    for key, value in headers.items():
        flat += (key, value)
    return tuple(flat)


def message_from_state(state: MessageState) -> Message:
    """The message :func:`message_state` made ``state`` of (once: it takes ``state`` over)."""
    message: Message = _new(Message)
    if not isinstance(state, dict):
        end = 1 + 2 * state[0]
        fields = dict(zip(state[1:end:2], state[2:end:2], strict=True))
        fields["_headers"] = dict(zip(state[end::2], state[end + 1 :: 2], strict=True))
        state = fields
    _set_dict(message, state)
    return message
