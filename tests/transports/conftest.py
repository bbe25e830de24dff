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


def _redis_factory(request: pytest.FixtureRequest) -> Callable[[], Transport]:
    from fastapi_bus.transports.redis import RedisTransport

    url: str = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    return lambda: RedisTransport(url, prefix=prefix, claim_idle=2)


#: Short rebalances, so that the tests that start and stop group members stay quick.
KAFKA_GROUP_OPTIONS = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 300,
    "rebalance_timeout_ms": 2000,
}


def kafka_transport(bootstrap: str, prefix: str) -> Transport:
    from fastapi_bus.transports.kafka import KafkaTransport

    return KafkaTransport(
        f"kafka://{bootstrap}",
        prefix=prefix,
        consumer_options=KAFKA_GROUP_OPTIONS,
        client_options={"metadata_max_age_ms": 1000},
    )


def _kafka_factory(request: pytest.FixtureRequest) -> Callable[[], Transport]:
    bootstrap: str = request.getfixturevalue("kafka_bootstrap")
    prefix = f"contract-{uuid.uuid4().hex[:12]}"
    return lambda: kafka_transport(bootstrap, prefix)


#: Contract tests that a broker cannot pass by its nature, and why (shown in the test report;
#: the transport raises NotImplementedError for what it lacks, as its docs page says).
NOT_APPLICABLE: dict[tuple[str, str], str] = {}

_FACTORIES = {"memory": lambda request: _memory_factory(), "rabbitmq": _rabbitmq_factory}
_FACTORIES["redis"] = _redis_factory
_FACTORIES["kafka"] = _kafka_factory


#: Every transport, each marked with the server it needs.
BROKERS = [
    "memory",
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("kafka", marks=pytest.mark.kafka),
]


@pytest.fixture(params=BROKERS)
async def new_transport(request: pytest.FixtureRequest) -> AsyncIterator[TransportFactory]:
    reason = NOT_APPLICABLE.get((request.param, request.node.originalname))
    if reason:
        pytest.skip(f"not applicable on {request.param}: {reason}")
    build = _FACTORIES[request.param](request)
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
