"""The orders database: SQLite through SQLAlchemy's asyncio API (the aiosqlite driver).

Every process of the example (the web processes and the worker) opens the same file, set by
``EXAMPLE_DATABASE_URL`` (default ``sqlite+aiosqlite:///example.db``, in the current folder).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Annotated

from fastapi import Depends
from sqlalchemy import ForeignKey, String, UniqueConstraint, event, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DATABASE_ENV = "EXAMPLE_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///example.db"
#: What the shop sells, with the price in cents and the stock it starts with.
CATALOG: dict[str, tuple[int, int]] = {"widget": (250, 100), "gadget": (1999, 5)}


def now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    item: Mapped[str]
    quantity: Mapped[int]
    card: Mapped[str]
    #: placed → reserved → paid → confirmed, or failed
    status: Mapped[str] = mapped_column(default="placed")
    reason: Mapped[str | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=now)


class HistoryEntry(Base):
    """One line of an order's history: each event about it, once per message."""

    __tablename__ = "order_history"

    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    event: Mapped[str]
    detail: Mapped[str] = mapped_column(default="")
    at: Mapped[datetime] = mapped_column(default=now)


class Stock(Base):
    __tablename__ = "stock"

    item: Mapped[str] = mapped_column(primary_key=True)
    price: Mapped[int]
    available: Mapped[int]


class Payment(Base):
    """A captured payment. One per order, enforced by the database: a payment handler that
    runs twice for the same order (at-least-once delivery) cannot record two."""

    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("order_id"),)

    charge_id: Mapped[str] = mapped_column(primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"))
    amount: Mapped[int]
    at: Mapped[datetime] = mapped_column(default=now)


class Email(Base):
    """The outbox of e-mails: a mail relay would send these; the example only writes them."""

    __tablename__ = "email_outbox"
    __table_args__ = (UniqueConstraint("order_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"))
    kind: Mapped[str]
    subject: Mapped[str]
    body: Mapped[str]
    at: Mapped[datetime] = mapped_column(default=now)


class RoomMember(Base):
    """Who is in which chat room, through which web process (shared by all of them)."""

    __tablename__ = "room_members"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    room: Mapped[str] = mapped_column(index=True)
    user: Mapped[str]
    process: Mapped[str] = mapped_column(index=True)


class Database:
    """An engine and a session factory; :meth:`create` makes the tables and the stock."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or os.environ.get(DATABASE_ENV, DEFAULT_DATABASE_URL)
        # Several processes write to one SQLite file: wait for each other's locks.
        self.engine: AsyncEngine = create_async_engine(self.url, connect_args={"timeout": 30})
        if self.url.startswith("sqlite"):
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def create(self) -> None:
        """Make the tables and the stock if missing. Processes that start together race to
        do it: the losers try again, and then find it done."""
        for attempt in range(10):
            try:
                async with self.engine.begin() as connection:
                    await connection.run_sync(Base.metadata.create_all)
                async with self.sessions.begin() as session:
                    known = set((await session.scalars(select(Stock.item))).all())
                    for item, (price, available) in CATALOG.items():
                        if item not in known:
                            session.add(Stock(item=item, price=price, available=available))
                return
            except DBAPIError:
                if attempt == 9:
                    raise
                await asyncio.sleep(0.1 * (attempt + 1))

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(connection: object, _: object) -> None:
    cursor = connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the writer
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def get_database() -> Database:
    """The app's database, in routes and handlers alike: ``create_app`` provides it through
    ``app.dependency_overrides`` (and tests can too)."""
    raise RuntimeError("no database: make the app with example_app.main.create_app()")


async def get_session(
    database: Annotated[Database, Depends(get_database)],
) -> AsyncIterator[AsyncSession]:
    """One transaction per request or per event: committed if the endpoint or the handler
    succeeds, rolled back if it fails (and then its events are not sent either)."""
    async with database.sessions() as session:
        yield session
        await session.commit()


# scope="function": in a route, commit when the endpoint returns, before the response and so
# before the request's events are sent. (Handlers always work this way.)
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
