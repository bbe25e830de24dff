"""The wire message.

A :class:`Message` is what travels through a transport: a body of bytes plus the ids and headers
that every broker can carry. Transports see only messages; models, routing and dependencies live
above them.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from datetime import datetime, timezone

from fastapi_bus.core.types import Headers

__all__ = ["JSON", "Message", "new_id"]

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


_clock = datetime.now
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
        # cheaper still than ``__dict__.update`` with keywords.
        fields = self.__dict__
        fields["name"] = name
        fields["body"] = body
        fields["id"] = new_id() if id is None else id
        fields["headers"] = {} if headers is None else headers
        fields["correlation_id"] = correlation_id
        fields["causation_id"] = causation_id
        fields["published_at"] = _clock(_UTC) if published_at is None else published_at
        fields["attempt"] = attempt
        fields["content_type"] = content_type
        fields["redelivered"] = redelivered

    def replace(self, **changes: object) -> Message:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
