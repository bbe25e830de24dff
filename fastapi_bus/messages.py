"""The wire message, event names and topic patterns.

A :class:`Message` is what travels through a transport: a body of bytes plus the ids and headers
that every broker can carry. Transports see only messages; models, routing and dependencies live
above them.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import datetime, timezone
from functools import lru_cache

from fastapi_bus.exceptions import ConfigurationError
from fastapi_bus.types import Headers

__all__ = ["Message", "new_id", "pattern_matches", "validate_event_name", "validate_pattern"]

JSON = "application/json"

_WORD = r"[A-Za-z0-9_\-:]+"
_NAME_RE = re.compile(rf"{_WORD}(\.{_WORD})*")
_PATTERN_RE = re.compile(rf"({_WORD}|\*|#)(\.({_WORD}|\*|#))*")


def new_id() -> str:
    """A new random message id (32 hex digits)."""
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclasses.dataclass(frozen=True)
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
    id: str = dataclasses.field(default_factory=new_id)
    #: Application headers (text to text).
    headers: Headers = dataclasses.field(default_factory=dict)
    #: Ties together everything caused by one request or one original event.
    correlation_id: str | None = None
    #: The id of the message whose handler published this one, if any.
    causation_id: str | None = None
    #: When the event was first published (UTC).
    published_at: datetime = dataclasses.field(default_factory=_now)
    #: 1 on first delivery to a handler, counting up with every retry.
    attempt: int = 1
    #: MIME type of ``body``.
    content_type: str = JSON
    #: True if the broker has delivered this message before (it was not acknowledged).
    redelivered: bool = False

    def replace(self, **changes: object) -> Message:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def validate_event_name(name: str, *, what: str = "event name") -> str:
    """Check that ``name`` is a valid event name (dot-separated words) and return it."""
    if not isinstance(name, str) or len(name.encode()) > 255 or not _NAME_RE.fullmatch(name):
        raise ConfigurationError(
            f"invalid {what} {name!r}: use dot-separated words of letters, digits, '_', '-' "
            "or ':' (at most 255 bytes), such as 'OrderPlaced' or 'orders.placed'"
        )
    return name


def validate_pattern(pattern: str) -> str:
    """Check an event name or topic pattern (``*`` = one word, ``#`` = zero or more)."""
    if not isinstance(pattern, str) or len(pattern.encode()) > 255:
        raise ConfigurationError(f"invalid event pattern {pattern!r}")
    if not _PATTERN_RE.fullmatch(pattern):
        raise ConfigurationError(
            f"invalid event pattern {pattern!r}: use dot-separated words, where a word may be "
            "'*' (exactly one word) or '#' (zero or more words), such as 'orders.*'"
        )
    return pattern


def is_pattern(name: str) -> bool:
    """True if ``name`` contains a wildcard word."""
    return any(word in ("*", "#") for word in name.split("."))


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    for index, word in enumerate(pattern.split(".")):
        sep = r"\." if index else ""
        if word == "#":
            # Zero or more words, together with the separator before them.
            parts.append(rf"(?:{sep}[^.]+)*" if index else r"(?:[^.]+(?:\.[^.]+)*)?")
        elif word == "*":
            parts.append(rf"{sep}[^.]+")
        else:
            parts.append(sep + re.escape(word))
    regex = "".join(parts)
    # A leading '#' that matched nothing must not leave a dangling separator.
    regex = regex.replace(r"(?:[^.]+(?:\.[^.]+)*)?\.", r"(?:[^.]+\.)*", 1)
    return re.compile(regex)


def pattern_matches(pattern: str, name: str) -> bool:
    """True if the event ``name`` matches the topic ``pattern``, as RabbitMQ's topic exchange
    decides it."""
    if pattern == name:
        return True
    return _compile(pattern).fullmatch(name) is not None
