"""The transactional outbox on SQLAlchemy 2 (async): events written with the data, sent after
commit by a relay.

``bus.publish(event, session=session)`` inserts the event into the outbox table in the
session's transaction, so the event exists exactly when the data does: a rollback leaves
nothing to send, and a crash after the commit leaves a row that a relay sends later.

The relay runs in every process whose bus has the outbox. It wakes up when a session of this
process that wrote to the outbox commits (so events go out at once in the common case), and
polls every ``poll_interval`` seconds for rows left behind by processes that died. Relays share
the work safely:

1. **Claim**, in a short transaction that relays take one at a time (a transaction-level
   advisory lock on PostgreSQL; SQLite's single writer elsewhere): the oldest unsent rows that
   nobody holds, skipping every row whose ``key`` has an earlier row held by another relay.
2. **Send** them in order, outside any transaction, waiting for the broker to take each.
3. **Mark** them sent, and release what could not be sent.

A relay that dies holding rows loses its claim after ``claim_timeout`` seconds, and another
relay sends them again: delivery is at least once (the message id is the same, for idempotent
handlers), and events of one key stay in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import MetaData, Table, and_, delete, event, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.core.messages import Message
from fastapi_bus.outbox.tables import outbox_table, row_values, to_message
from fastapi_bus.runtime.publishing import SendMessage

__all__ = ["SQLAlchemyOutbox"]

logger = logging.getLogger("fastapi_bus.outbox")

#: The advisory lock that serialises claims on PostgreSQL (any 64-bit number of our own).
_CLAIM_LOCK = 0x6661737462757301


def _now() -> datetime:
    return datetime.now(timezone.utc)


class SQLAlchemyOutbox:
    """A transactional outbox in your database, and its relay.

    ```python
    engine = create_async_engine("postgresql+asyncpg://app@db/shop")
    outbox = SQLAlchemyOutbox(engine)
    app.include_extension(BusExtension(url, service="shop", outbox=outbox))


    @app.post("/orders", status_code=202)
    async def place(order: OrderIn, session: Session, bus: Bus) -> None:
        session.add(Order(...))
        await bus.publish(OrderPlaced(...), session=session, key=order.customer_id)
        await session.commit()  # the order and its event, or neither
    ```

    The table is not created behind your back: include :attr:`metadata` in your migrations
    (Alembic's ``target_metadata``), or call :meth:`create_tables` in development and tests.

    Args:
        engine: the ``AsyncEngine`` of the database your sessions use.
        table: the outbox table's name.
        poll_interval: seconds between looks for rows that no commit announced (left behind by
            a process that died, or committed by a process without a relay).
        batch_size: rows claimed and sent at a time.
        claim_timeout: seconds after which rows claimed by a relay that stopped answering are
            sent by another.
        keep_sent: how long sent rows are kept before they are deleted.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        table: str = "fastapi_bus_outbox",
        poll_interval: float = 1.0,
        batch_size: int = 100,
        claim_timeout: float = 30.0,
        keep_sent: timedelta = timedelta(hours=1),
    ) -> None:
        if poll_interval <= 0 or claim_timeout <= 0 or batch_size < 1:
            raise ConfigurationError(
                "SQLAlchemyOutbox needs a positive poll_interval and claim_timeout, and a "
                "batch_size of at least 1"
            )
        self.engine = engine
        #: The tables to create (``create_tables``) or to migrate (Alembic ``target_metadata``).
        self.metadata = MetaData()
        self.table: Table = outbox_table(self.metadata, table)
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.claim_timeout = timedelta(seconds=claim_timeout)
        self.keep_sent = keep_sent
        self._relay_id = uuid.uuid4().hex
        self._postgres = engine.dialect.name == "postgresql"
        self._send: SendMessage | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_cleanup = _now()
        self._stopping = False

    async def create_tables(self) -> None:
        """Create the outbox table if it does not exist (for development and tests)."""
        async with self.engine.begin() as connection:
            await connection.run_sync(self.metadata.create_all)

    # writing

    async def add(
        self, session: Any, message: Message, *, delay: float | None, key: str | None
    ) -> None:
        """Insert ``message`` in ``session``'s transaction (``bus.publish(..., session=)``)."""
        if not isinstance(session, AsyncSession):
            raise ConfigurationError(
                f"publish(..., session=...) takes a SQLAlchemy AsyncSession, not "
                f"{type(session).__name__}"
            )
        await session.execute(insert(self.table).values(row_values(message, delay, key)))
        sync_session = session.sync_session
        if not sync_session.info.get("fastapi_bus_outbox"):
            sync_session.info["fastapi_bus_outbox"] = True
            event.listen(sync_session, "after_commit", self._committed)

    def _committed(self, _session: Any) -> None:
        # Called by SQLAlchemy, on the event loop's thread, when a session that wrote here
        # commits: wake the relay so that the events go out now rather than at the next poll.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    # relaying

    async def start(self, send: SendMessage) -> None:
        """Start the relay; it sends with ``send`` (the bus's)."""
        if self._task is not None:
            return
        self._send = send
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._wake.set()  # look at once: rows may be waiting from before
        self._task = asyncio.create_task(self._run())

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the relay once the batch it is sending is done (within ``grace`` seconds)."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), grace)
            except asyncio.TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._loop = None

    async def _run(self) -> None:
        pause = self.poll_interval
        self._stopping = False
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
            self._wake.clear()
            if self._stopping:
                return
            try:
                while await self.relay_once() == self.batch_size and not self._stopping:
                    pass  # more may be waiting
                await self._cleanup()
                pause = self.poll_interval
            except Exception as exc:
                logger.warning("the outbox relay failed (%s); trying again", exc)
                pause = min(pause * 2, 30.0)

    async def relay_once(self) -> int:
        """Claim, send and mark one batch; returns how many were sent."""
        assert self._send is not None, "the relay is not started"
        rows = await self._claim()
        sent: list[int] = []
        try:
            for row in rows:
                await self._send(to_message(row), delay=row.delay)
                sent.append(row.id)
        finally:
            await self._settle(sent, [row.id for row in rows if row.id not in sent])
        return len(sent)

    async def _serialise(self, connection: AsyncConnection) -> None:
        """Make relays claim one at a time, for the rest of this transaction."""
        if self._postgres:
            lock = text("SELECT pg_advisory_xact_lock(:key)")
            await connection.execute(lock, {"key": _CLAIM_LOCK})
        else:
            # SQLite: any write takes the database's single write lock until commit.
            await connection.execute(
                update(self.table).where(self.table.c.id == -1).values(claimed_by=None)
            )

    async def _claim(self) -> list[Any]:
        t = self.table
        now = _now()
        async with self.engine.begin() as connection:
            await self._serialise(connection)
            unsent = t.c.sent_at.is_(None)
            held = and_(unsent, t.c.claimed_until >= now)
            busy_keys = set(
                (
                    await connection.execute(
                        select(t.c.ordering_key).where(held, t.c.ordering_key.is_not(None))
                    )
                ).scalars()
            )
            free = or_(t.c.claimed_until.is_(None), t.c.claimed_until < now)
            candidates = (
                await connection.execute(
                    select(t).where(unsent, free).order_by(t.c.id).limit(self.batch_size)
                )
            ).all()
            rows = [row for row in candidates if row.ordering_key not in busy_keys]
            if rows:
                await connection.execute(
                    update(t)
                    .where(t.c.id.in_([row.id for row in rows]))
                    .values(claimed_by=self._relay_id, claimed_until=now + self.claim_timeout)
                )
        return rows

    async def _settle(self, sent: list[int], unsent: list[int]) -> None:
        t = self.table
        async with self.engine.begin() as connection:
            if sent:
                await connection.execute(
                    update(t).where(t.c.id.in_(sent)).values(sent_at=_now(), claimed_until=None)
                )
            if unsent:
                await connection.execute(
                    update(t).where(t.c.id.in_(unsent)).values(claimed_by=None, claimed_until=None)
                )

    async def _cleanup(self) -> None:
        now = _now()
        if now < self._next_cleanup:
            return
        self._next_cleanup = now + min(self.keep_sent, timedelta(minutes=5))
        async with self.engine.begin() as connection:
            await connection.execute(
                delete(self.table).where(self.table.c.sent_at < now - self.keep_sent)
            )
