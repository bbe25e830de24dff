"""The transactional outbox on real SQLite and PostgreSQL: events leave only with their data."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import pytest
from fastapi import Depends, Request
from pydantic import BaseModel
from sqlalchemy import Column, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from fastapi_bus import Bus, BusExtension, EventBus, EventRouter, FastAPI, Message, RetryPolicy
from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.outbox import SQLAlchemyInbox, SQLAlchemyOutbox
from fastapi_bus.transports import MemoryTransport
from fastapi_bus.transports.redis import RedisTransport
from tests.utils import wait_until

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]


class OrderPlaced(BaseModel):
    order_id: str
    total: float


class Step(BaseModel):
    key: str
    seq: int


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]


def _postgres_url() -> str:
    return os.environ.get(
        "FASTAPI_BUS_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database URL; the test's outbox tables are dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
        return
    url = _postgres_url()
    engine = create_async_engine(url)
    try:
        async with engine.connect():
            pass
    except OSError:
        await engine.dispose()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("PostgreSQL is not reachable (CI=true)")
        pytest.skip("PostgreSQL is not reachable; set FASTAPI_BUS_POSTGRES_URL or start one")
    await engine.dispose()
    yield url


@pytest.fixture
def table() -> str:
    return f"outbox_{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def engine(database: str, table: str) -> AsyncIterator[AsyncEngine]:
    # No pool: the TestClient runs the app on an event loop of its own, where connections
    # made on the test's loop cannot be used.
    engine = create_async_engine(database, poolclass=NullPool)
    yield engine
    outbox = SQLAlchemyOutbox(engine, table=table)
    async with engine.begin() as connection:
        await connection.run_sync(outbox.metadata.drop_all)
    await engine.dispose()


async def rows(outbox: SQLAlchemyOutbox) -> int:
    async with outbox.engine.connect() as connection:
        count = await connection.scalar(select(func.count()).select_from(outbox.table))
    return int(count or 0)


async def test_a_commit_sends_and_a_rollback_sends_nothing(engine: AsyncEngine, table: str) -> None:
    # A poll interval of minutes: only the commit can wake the relay in time.
    outbox = SQLAlchemyOutbox(engine, table=table, poll_interval=600)
    await outbox.create_tables()
    got: list[str] = []
    events = EventRouter()

    @events.on(OrderPlaced)
    async def reserve(event: OrderPlaced) -> None:
        got.append(event.order_id)

    bus = EventBus(MemoryTransport(), service="shop", routers=[events], outbox=outbox)
    await bus.start()
    try:
        await bus.start_consuming()
        sessions = async_sessionmaker(engine)
        async with sessions() as session:
            await bus.publish(OrderPlaced(order_id="kept", total=1), session=session)
            await session.commit()
        async with sessions() as session:
            await bus.publish(OrderPlaced(order_id="rolled-back", total=1), session=session)
            await session.rollback()
        async with sessions() as session:
            await bus.publish(OrderPlaced(order_id="later", total=1), session=session)
            await session.commit()
        await wait_until(lambda: got == ["kept", "later"], timeout=30)
        assert await rows(outbox) == 2, "the rolled-back event never reached the table"
    finally:
        await bus.close(grace=1)


async def test_an_endpoint_publishes_with_its_session(engine: AsyncEngine, table: str) -> None:
    from fastapi.testclient import TestClient

    outbox = SQLAlchemyOutbox(engine, table=table, poll_interval=600)
    await outbox.create_tables()
    sessions = async_sessionmaker(engine)
    got: list[str] = []
    events = EventRouter()

    @events.on(OrderPlaced)
    async def reserve(event: OrderPlaced) -> None:
        got.append(event.order_id)

    app = FastAPI()
    app.state.sessions = sessions
    app.include_extension(
        BusExtension("memory://", service="shop", routers=[events], outbox=outbox)
    )

    @app.post("/orders/{order_id}", status_code=202)
    async def place(order_id: str, bus: Bus, session: Session) -> None:
        await bus.publish(OrderPlaced(order_id=order_id, total=1), session=session)
        if order_id == "refused":
            await session.rollback()
            return
        await session.commit()

    def run() -> None:
        with TestClient(app) as client:
            assert client.post("/orders/refused").status_code == 202
            assert client.post("/orders/o1").status_code == 202
            for _ in range(3000):
                if got:
                    break
                import time

                time.sleep(0.01)

    await asyncio.to_thread(run)
    assert got == ["o1"]


async def test_publishing_with_a_session_needs_an_outbox() -> None:
    bus = EventBus(MemoryTransport(), service="shop")
    await bus.start()
    try:
        with pytest.raises(ConfigurationError, match="outbox"):
            await bus.publish(OrderPlaced(order_id="x", total=1), session=object())
    finally:
        await bus.close()


@pytest.mark.redis
async def test_an_event_committed_by_a_process_that_died_is_sent_by_the_next_relay(
    database: str, engine: AsyncEngine, table: str, redis_url: str, redis_prefix: str
) -> None:
    outbox = SQLAlchemyOutbox(engine, table=table, poll_interval=0.2)
    await outbox.create_tables()
    writer = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tests.outbox_writer", database, table, "orphan"],
        cwd=ROOT, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert writer.returncode == -9, writer.stderr.decode()
    assert await rows(outbox) == 1, "committed, never sent"
    got: list[Message] = []
    events = EventRouter()

    @events.on(OrderPlaced)
    async def reserve(event: OrderPlaced, msg: Message) -> None:
        got.append(msg)

    bus = EventBus(
        RedisTransport(redis_url, prefix=redis_prefix),
        service="shop",
        routers=[events],
        outbox=outbox,
    )
    await bus.start()
    try:
        await bus.start_consuming()
        await wait_until(lambda: len(got) == 1, timeout=30, what="the orphaned event")
        assert got[0].body == b'{"order_id": "orphan", "total": 1}'
    finally:
        await bus.close(grace=1)


async def test_two_relays_send_each_row_once_and_keep_each_keys_order(
    engine: AsyncEngine, table: str
) -> None:
    relays = [SQLAlchemyOutbox(engine, table=table, poll_interval=0.05, batch_size=7) for _ in "ab"]
    await relays[0].create_tables()
    seen: list[tuple[str, int, str]] = []
    events = EventRouter()

    @events.on(Step, prefetch=1)
    async def record(event: Step, msg: Message) -> None:
        seen.append((event.key, event.seq, msg.id))

    broker = f"memory://outbox-{uuid.uuid4().hex}"
    buses = [
        EventBus(MemoryTransport(broker), service="shop", routers=[events], outbox=relays[0]),
        EventBus(MemoryTransport(broker), service="shop", outbox=relays[1]),
    ]
    for bus in buses:
        await bus.start()
    try:
        await buses[0].start_consuming()
        sessions = async_sessionmaker(engine)
        total = 0
        for seq in range(20):
            async with sessions() as session:
                for key in ("a", "b", "c", "d", "e"):
                    bus = buses[(seq + ord(key)) % 2]
                    await bus.publish(Step(key=key, seq=seq), session=session, key=key)
                    total += 1
                await session.commit()
        await wait_until(lambda: len(seen) >= total, timeout=60, what="every event")
        assert len({message_id for _, _, message_id in seen}) == len(seen) == total
        for key in "abcde":
            assert [seq for k, seq, _ in seen if k == key] == list(range(20)), key
    finally:
        for bus in buses:
            await bus.close(grace=1)


# The inbox


async def test_the_inbox_makes_a_handlers_effect_exactly_once(
    engine: AsyncEngine, table: str
) -> None:
    inbox = SQLAlchemyInbox(engine, table=f"{table}_inbox")
    payments_table = Table(
        f"{table}_payments", inbox.metadata, Column("order_id", String(64), nullable=False)
    )
    await inbox.create_tables()
    sessions = async_sessionmaker(engine)
    calls: list[int] = []
    outcomes: list[str] = []  # what each call that returned did, once its transaction ended
    events = EventRouter(retry=RetryPolicy(attempts=3, backoff=0))

    @events.on(OrderPlaced)
    async def charge(event: OrderPlaced, msg: Message) -> None:
        calls.append(msg.attempt)
        async with sessions() as session:
            async with session.begin():
                first = await inbox.record(session, msg, handler="charge")
                if first:
                    await session.execute(insert(payments_table).values(order_id=event.order_id))
                    if len(calls) == 1:
                        raise ConnectionError("the gateway timed out after charging")  # rolled back
            outcomes.append("charged" if first else "skipped")

    bus = EventBus(MemoryTransport(), service="shop", routers=[events])
    await bus.start()
    try:
        await bus.start_consuming()
        message = bus.encode(OrderPlaced(order_id="o1", total=5))
        await bus.send_message(message)
        await wait_until(lambda: outcomes == ["charged"], what="the retry after the failure")
        await bus.send_message(message)  # delivered again: at least once
        await wait_until(lambda: outcomes == ["charged", "skipped"], what="the duplicate")
        assert len(calls) == 3
        async with engine.connect() as connection:
            paid = (await connection.execute(select(payments_table.c.order_id))).scalars().all()
        assert paid == ["o1"], "charged once: the failed try rolled back, the duplicate skipped"
    finally:
        await bus.close(grace=1)
        async with engine.begin() as connection:
            await connection.run_sync(inbox.metadata.drop_all)


async def test_the_inbox_is_an_idempotency_store_shared_by_replicas(
    engine: AsyncEngine, table: str
) -> None:
    inbox = SQLAlchemyInbox(engine, table=f"{table}_inbox")
    await inbox.create_tables()
    handled: list[str] = []
    events = EventRouter()

    @events.on(OrderPlaced, idempotent=True, prefetch=1)
    async def reserve(event: OrderPlaced) -> None:
        handled.append(event.order_id)

    broker = f"memory://inbox-{uuid.uuid4().hex}"
    replicas = [
        EventBus(MemoryTransport(broker), service="shop", routers=[events], idempotency_store=inbox)
        for _ in "ab"
    ]
    try:
        for replica in replicas:
            await replica.start()
        await replicas[0].start_consuming()
        message = replicas[0].encode(OrderPlaced(order_id="o1", total=1))
        await replicas[0].send_message(message)
        key = f"{replicas[0].queue_for(replicas[0].routes[0])}:{message.id}"
        deadline = asyncio.get_running_loop().time() + 10
        while not await inbox.seen(key):
            assert asyncio.get_running_loop().time() < deadline, "remembered"
            await asyncio.sleep(0.01)
        # The other replica gets the same message again, then another one, in this order.
        await replicas[0].stop_consuming()
        await replicas[1].send_message(message)
        await replicas[1].send_message(replicas[1].encode(OrderPlaced(order_id="after", total=1)))
        await replicas[1].start_consuming()
        await wait_until(lambda: "after" in handled)
        assert handled == ["o1", "after"], "the second delivery of o1 was skipped"
        assert await inbox.purge() == 0, "nothing is older than a week"
    finally:
        for replica in replicas:
            await replica.close(grace=1)
        async with engine.begin() as connection:
            await connection.run_sync(inbox.metadata.drop_all)
