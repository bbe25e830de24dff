"""Writes one event to the outbox, commits, and dies at once (SIGKILL), before any relay could
send it: ``python -m tests.outbox_writer DATABASE_URL TABLE ORDER_ID``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from fastapi_bus.core.messages import Message
from fastapi_bus.outbox import SQLAlchemyOutbox


async def main(url: str, table: str, order_id: str) -> None:
    engine = create_async_engine(url)
    outbox = SQLAlchemyOutbox(engine, table=table)
    async with async_sessionmaker(engine)() as session:
        body = f'{{"order_id": "{order_id}", "total": 1}}'.encode()
        await outbox.add(session, Message(name="OrderPlaced", body=body), delay=None, key=None)
        await session.commit()
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
