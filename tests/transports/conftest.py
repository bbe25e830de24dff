from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from fastapi_bus.transports.base import Transport
from fastapi_bus.transports.memory import MemoryTransport

#: Makes a started transport. Every transport one test makes talks to the same broker, so a
#: test can stand up competing consumers or several processes.
TransportFactory = Callable[[], Awaitable[Transport]]


def _memory_factory() -> Callable[[], Transport]:
    name = f"memory://contract-{uuid.uuid4().hex}"
    return lambda: MemoryTransport(name)


def _rabbitmq_factory(request: pytest.FixtureRequest) -> Callable[[], Transport]:
    from fastapi_bus.transports.rabbitmq import RabbitMQTransport

    url: str = request.getfixturevalue("rabbitmq_url")
    exchange = f"contract-{uuid.uuid4().hex}"
    return lambda: RabbitMQTransport(url, exchange=exchange, auto_delete_topology=True)


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
async def new_transport(request: pytest.FixtureRequest) -> AsyncIterator[TransportFactory]:
    build = _memory_factory() if request.param == "memory" else _rabbitmq_factory(request)
    made: list[Transport] = []

    async def factory() -> Transport:
        transport = build()
        await transport.start()
        made.append(transport)
        return transport

    yield factory
    for transport in reversed(made):
        await transport.close(grace=1)


@pytest.fixture
def queue_name() -> str:
    return f"contract.{uuid.uuid4().hex[:12]}"
