"""Looking into a queue's stream from tools: browse, pull one at a time, purge.

Pulling walks the stream in order without a consumer group, so the dead-letter tools see each
message once per run; a pulled message is removed only when acknowledged. Releasing one leaves it
where it is (its order is kept) and lets the next pull start from it again.
"""

from __future__ import annotations

from typing import Any

from fastapi_bus.core.messages import Message
from fastapi_bus.transports.base import Pulled
from fastapi_bus.transports.redis.mapping import decode_fields
from fastapi_bus.transports.redis.session import Session

__all__ = ["Inspector"]


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Pulled(Pulled):
    def __init__(self, inspector: Inspector, queue: str, entry_id: str, message: Message) -> None:
        super().__init__(message)
        self._inspector = inspector
        self._queue = queue
        self._entry_id = entry_id

    async def ack(self) -> None:
        await self._inspector.remove(self._queue, self._entry_id)

    async def release(self) -> None:
        self._inspector.rewind(self._queue, self._entry_id)


class Inspector:
    """Browse, pull and purge for one transport."""

    def __init__(self, session: Session) -> None:
        self._session = session
        #: Per queue, where the next pull starts: an entry id, "(id" after it, or "-".
        self._next: dict[str, str] = {}

    async def browse(self, queue: str, limit: int = 100) -> list[Message]:
        entries = await self._session.client.xrange(
            self._session.keys.stream(queue), "-", "+", count=limit
        )
        return [decode_fields(fields) for _, fields in entries]

    async def pull(self, queue: str) -> Pulled | None:
        start = self._next.get(queue, "-")
        entries = await self._session.client.xrange(
            self._session.keys.stream(queue), start, "+", count=1
        )
        if not entries:
            return None
        entry_id, fields = entries[0]
        entry_id = _text(entry_id)
        self._next[queue] = "(" + entry_id
        return _Pulled(self, queue, entry_id, decode_fields(fields))

    def rewind(self, queue: str, entry_id: str) -> None:
        start = self._next.get(queue, "-")
        if start != "-" and _order(entry_id) <= _order(start.lstrip("(")):
            self._next[queue] = entry_id

    async def remove(self, queue: str, entry_id: str) -> None:
        await self._session.ack(self._session.keys.stream(queue), entry_id)

    async def purge(self, queue: str) -> int:
        self._next.pop(queue, None)
        removed: int = await self._session.client.xtrim(
            self._session.keys.stream(queue), maxlen=0, approximate=False
        )
        return removed
