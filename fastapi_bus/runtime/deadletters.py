"""Looking at, replaying and purging dead-lettered messages.

```python
dlq = ext.bus.dead_letters
for letter in await dlq.list(handler="reserve_stock", exception_type="ConnectionError"):
    print(letter.message.id, letter.reason)
await dlq.replay(handler="reserve_stock")       # back to the handler's queue, same message id
```

Replaying moves one message at a time: the copy is in the handler's queue (confirmed by the
broker) before the dead letter is removed, so an interrupted replay loses nothing (a message may
then be in both places, and be handled again: handlers are at-least-once anyway).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import cast

from typing_extensions import TypedDict, Unpack

from fastapi_bus.core import headers as H
from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.core.messages import Message
from fastapi_bus.core.types import check_options
from fastapi_bus.transports.base import Pulled, Transport, dead_letter_queue

__all__ = ["BulkOptions", "DeadLetter", "DeadLetterQueue", "Filters"]


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


Progress = Callable[[int], None]


class Filters(TypedDict, total=False):
    """Which dead letters the tools act on: every filter given must match. The admin routes
    and the ``fastapi-bus dlq`` commands offer the same filters."""

    #: Only the dead letters of this handler (by name).
    handler: str | None
    #: Only failures with this exception type: its full dotted name or its last part
    #: (``ConnectionError``).
    exception_type: str | None
    #: Only failures at least this old.
    older_than: timedelta | None
    #: Only failures at most this old.
    newer_than: timedelta | None
    #: Only these message ids.
    message_ids: Sequence[str] | None


class BulkOptions(Filters, total=False):
    """The options of :meth:`DeadLetterQueue.replay` and ``purge``: the :class:`Filters`,
    and ``progress``, called with the count so far."""

    progress: Progress | None


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A dead-lettered message and why it failed."""

    message: Message
    handler: str
    queue: str
    reason: str
    exception_type: str | None
    exception_message: str | None
    attempts: int
    first_failure_at: datetime | None
    last_failure_at: datetime | None
    traceback: str | None

    @classmethod
    def from_message(cls, message: Message, queue: str) -> DeadLetter:
        headers = message.headers
        return cls(
            message=message,
            handler=headers.get(H.HANDLER, ""),
            queue=headers.get(H.QUEUE, queue),
            reason=headers.get(H.DEAD_LETTER_REASON, ""),
            exception_type=headers.get(H.EXCEPTION_TYPE),
            exception_message=headers.get(H.EXCEPTION_MESSAGE),
            attempts=int(headers.get(H.ATTEMPTS, "0") or 0),
            first_failure_at=_parse_time(headers.get(H.FIRST_FAILURE_AT)),
            last_failure_at=_parse_time(headers.get(H.LAST_FAILURE_AT)),
            traceback=headers.get(H.TRACEBACK),
        )

    def matches(self, *, now: datetime | None = None, **filters: Unpack[Filters]) -> bool:
        """True if this dead letter passes every given filter (see :class:`Filters`)."""
        check_options(filters, Filters, "matches")
        handler = filters.get("handler")
        if handler is not None and self.handler != handler:
            return False
        message_ids = filters.get("message_ids")
        if message_ids is not None and self.message.id not in message_ids:
            return False
        exception_type = filters.get("exception_type")
        if exception_type is not None:
            full = self.exception_type or ""
            if exception_type not in (full, full.rsplit(".", 1)[-1]):
                return False
        failed = self.last_failure_at
        now = now or datetime.now(timezone.utc)
        older_than, newer_than = filters.get("older_than"), filters.get("newer_than")
        if older_than is not None and (failed is None or now - failed < older_than):
            return False
        return not (newer_than is not None and (failed is None or now - failed > newer_than))

    def for_replay(self) -> Message:
        """The message as it goes back to its handler: same id and body, failure headers
        removed, attempts counted from 1 again."""
        headers = {
            key: value
            for key, value in self.message.headers.items()
            if key not in H.FAILURE_HEADERS
        }
        headers[H.REPLAYED] = str(int(self.message.headers.get(H.REPLAYED, "0")) + 1)
        return self.message.replace(headers=headers, attempt=1, redelivered=False)


class DeadLetterQueue:
    """Tools over the dead-letter queues of one bus's handlers (``bus.dead_letters``). The bus
    must be started (its transport connected); it need not consume.

    Args:
        transport: the bus's transport.
        handler_queues: returns each handler's queue, by handler name.
    """

    def __init__(
        self, transport: Transport, handler_queues: Callable[[], Mapping[str, str]]
    ) -> None:
        self._transport = transport
        self._handler_queues = handler_queues

    def queues(self, handler: str | None = None) -> list[str]:
        """The handler queues whose dead letters these tools look at."""
        known_queues = self._handler_queues()
        queues = [queue for name, queue in known_queues.items() if handler in (None, name)]
        if handler is not None and not queues:
            known = ", ".join(sorted(known_queues)) or "none"
            raise ConfigurationError(f"no handler named {handler!r} (handlers: {known})")
        return queues

    async def list(self, *, limit: int = 100, **filters: Unpack[Filters]) -> list[DeadLetter]:
        """Dead letters that match the :class:`Filters`, oldest first per handler, without
        removing them; at most ``limit``."""
        check_options(filters, Filters, "list")
        found: list[DeadLetter] = []
        now = datetime.now(timezone.utc)
        checked = _without_handler(filters)
        for queue in self.queues(filters.get("handler")):
            for message in await self._transport.browse(dead_letter_queue(queue), 100_000):
                letter = DeadLetter.from_message(message, queue)
                if letter.matches(now=now, **checked):
                    found.append(letter)
                    if len(found) >= limit:
                        return found
        return found

    async def show(self, message_id: str, *, handler: str | None = None) -> DeadLetter | None:
        """The dead letter with this message id, if any."""
        for letter in await self.list(handler=handler, limit=1_000_000):
            if letter.message.id == message_id:
                return letter
        return None

    async def replay(self, **options: Unpack[BulkOptions]) -> int:
        """Send the dead letters that match the :class:`Filters` back to their handler's
        queue; returns how many. ``progress`` is called with the count so far."""

        async def move(letter: DeadLetter, pulled: Pulled) -> None:
            await self._transport.send(letter.queue, letter.for_replay())
            await pulled.ack()

        check_options(options, BulkOptions, "replay")
        return await self._each(move, options)

    async def purge(self, **options: Unpack[BulkOptions]) -> int:
        """Delete the dead letters that match the :class:`Filters` for good; returns how
        many. ``progress`` as for :meth:`replay`."""

        async def drop(letter: DeadLetter, pulled: Pulled) -> None:
            await pulled.ack()

        check_options(options, BulkOptions, "purge")
        return await self._each(drop, options)

    async def _each(
        self, act: Callable[[DeadLetter, Pulled], Awaitable[None]], options: BulkOptions
    ) -> int:
        done = 0
        now = datetime.now(timezone.utc)
        transport = self._transport
        progress = options.get("progress")
        filters = _without_handler(options)
        for queue in self.queues(options.get("handler")):
            dlq = dead_letter_queue(queue)
            # Only what is there now: messages dead-lettered meanwhile wait for the next run.
            count = len(await transport.browse(dlq, 1_000_000))
            kept: list[Pulled] = []
            try:
                for _ in range(count):
                    pulled = await transport.pull(dlq)
                    if pulled is None:
                        break
                    letter = DeadLetter.from_message(pulled.message, queue)
                    if letter.matches(now=now, **filters):
                        await act(letter, pulled)
                        done += 1
                        if progress is not None:
                            progress(done)
                    else:
                        kept.append(pulled)
            finally:
                # Give back what did not match, last first, so the queue keeps its order.
                for pulled in reversed(kept):
                    await pulled.release()
        return done


def _without_handler(options: Filters) -> Filters:
    """The filters to check on each dead letter of the queues that ``handler`` picked."""
    checked = Filters.__optional_keys__ - {"handler"}
    return cast(Filters, {key: value for key, value in options.items() if key in checked})
