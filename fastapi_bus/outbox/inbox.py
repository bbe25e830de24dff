"""The inbox: "message X was handled", written in the same transaction as the handler's work.

Delivery is at least once, so a handler may see a message again (after a crash, a lost
acknowledgement, a replay). When the handler's effects are in a database, recording the message
in that same transaction makes the effect exactly once: either both commit, or neither does and
the next delivery does the work.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, String, Table, delete, insert, select
from sqlalchemy.dialects.postgresql import insert as _postgres_insert
from sqlalchemy.dialects.sqlite import insert as _sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from fastapi_bus.core.messages import Message
from fastapi_bus.pipeline.idempotency import IdempotencyStore

__all__ = ["SQLAlchemyInbox"]


class SQLAlchemyInbox(IdempotencyStore):
    """The messages each handler has handled, in your database.

    In a handler, record the message in the transaction that does the work:

    ```python
    @events.on(PaymentRequested)
    async def charge(event: PaymentRequested, msg: Message, session: Session) -> None:
        async with session.begin():
            if not await inbox.record(session, msg, handler="charge"):
                return  # handled before: its effects are committed already
            session.add(Payment(order_id=event.order_id, amount=event.amount))
    ```

    It is also an :class:`~fastapi_bus.IdempotencyStore` for ``idempotent=True`` handlers
    (``BusExtension(idempotency_store=inbox)``), shared by every replica; that records the
    message after the handler returns, in a transaction of its own.

    Args:
        engine: the ``AsyncEngine`` of your database.
        table: the inbox table's name (in :attr:`metadata`, for your migrations).
        keep: how long records count; older ones are ignored and removed by :meth:`purge`.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        table: str = "fastapi_bus_inbox",
        keep: timedelta = timedelta(days=7),
    ) -> None:
        self.engine = engine
        self.keep = keep
        #: The table to create (``create_tables``) or to migrate (Alembic ``target_metadata``).
        self.metadata = MetaData()
        self.table = Table(
            table,
            self.metadata,
            Column("handler", String(255), primary_key=True),
            Column("message_id", String(255), primary_key=True),
            Column("handled_at", DateTime(timezone=True), nullable=False),
        )

    async def create_tables(self) -> None:
        """Create the inbox table if it does not exist (for development and tests)."""
        async with self.engine.begin() as connection:
            await connection.run_sync(self.metadata.create_all)

    async def record(self, session: AsyncSession, message: Message, *, handler: str) -> bool:
        """Record that ``handler`` handles ``message``, in ``session``'s transaction. False if
        it was recorded before (by a committed transaction): skip the work then.

        A second delivery handled at the same moment waits for the first transaction and then
        gets False (or, if that one rolled back, True)."""
        values = {"handler": handler, "message_id": message.id, "handled_at": _now()}
        dialect = session.bind.dialect.name if session.bind is not None else ""
        if dialect in ("postgresql", "sqlite"):
            # INSERT ... ON CONFLICT DO NOTHING: a duplicate neither fails nor aborts the
            # transaction (and SQLite's driver cannot be trusted with savepoints).
            dialect_insert = _postgres_insert if dialect == "postgresql" else _sqlite_insert
            statement = dialect_insert(self.table).values(values).on_conflict_do_nothing()
            result: Any = await session.execute(statement)
            return bool(result.rowcount == 1)
        try:
            async with session.begin_nested():  # a savepoint: a duplicate keeps the transaction
                await session.execute(insert(self.table).values(values))
        except IntegrityError:
            return False
        return True

    async def purge(self) -> int:
        """Delete the records older than ``keep``; returns how many. Run it on a schedule."""
        async with self.engine.begin() as connection:
            result = await connection.execute(
                delete(self.table).where(self.table.c.handled_at < _now() - self.keep)
            )
        return int(result.rowcount or 0)

    # IdempotencyStore, for idempotent=True handlers: "<queue>:<message id>" keys.

    async def seen(self, key: str) -> bool:
        handler, _, message_id = key.rpartition(":")
        t = self.table
        async with self.engine.connect() as connection:
            found: Any = await connection.scalar(
                select(t.c.handled_at).where(
                    t.c.handler == handler,
                    t.c.message_id == message_id,
                    t.c.handled_at >= _now() - self.keep,
                )
            )
        return found is not None

    async def remember(self, key: str) -> None:
        handler, _, message_id = key.rpartition(":")
        values = {"handler": handler, "message_id": message_id, "handled_at": _now()}
        try:
            async with self.engine.begin() as connection:
                await connection.execute(insert(self.table).values(values))
        except IntegrityError:
            pass  # a replica remembered it first


def _now() -> datetime:
    return datetime.now(timezone.utc)
