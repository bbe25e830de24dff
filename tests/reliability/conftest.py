"""Buses on every transport, and a way to put raw messages into their queues.

``new_bus`` runs on each transport of the shared contract suite's ``new_transport`` fixture
(``tests/transports/conftest.py``), so a transport added there is covered here too. What a
foreign producer can put on the wire that ``Transport.send`` cannot express (AMQP header
tables, a missing type...) is injected per protocol by :data:`RAW_INJECTORS`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from fastapi_bus import EventBus, EventRouter
from fastapi_bus.transports.base import Transport
from tests.rabbitmq_nodes import RabbitNode, own_node, rabbitmq_installed
from tests.transports.conftest import TransportFactory, new_transport

__all__ = ["BusFactory", "new_bus", "new_transport", "own_rabbitmq"]

#: The broker's consumer timeout on :func:`own_rabbitmq`, in seconds, checked every half second
#: (instead of every minute), so that a test can see it act.
OWN_CONSUMER_TIMEOUT = 3.0

BusFactory = Callable[..., Awaitable[EventBus]]


@pytest.fixture
async def new_bus(new_transport: TransportFactory) -> AsyncIterator[BusFactory]:
    """Makes a started, consuming bus of a new service on the transport under test."""
    made: list[EventBus] = []

    async def factory(*routers: EventRouter, **options: Any) -> EventBus:
        transport: Transport = await new_transport()
        service = f"rel{uuid.uuid4().hex[:10]}"
        bus = EventBus(transport, service=service, routers=list(routers), **options)
        made.append(bus)
        await bus.start()
        await bus.start_consuming()
        return bus

    yield factory
    for bus in reversed(made):
        await bus.close(grace=1)


@pytest.fixture(scope="session")
def own_rabbitmq() -> Iterator[RabbitNode]:
    """A RabbitMQ node of the tests' own (see ``own_node.py``), for what must not happen to a
    shared broker: resource alarms, a consumer timeout of seconds."""
    if not rabbitmq_installed():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("rabbitmq-server is not installed (CI=true)")
        pytest.skip("rabbitmq-server is not installed here")
    milliseconds = int(OWN_CONSUMER_TIMEOUT * 1000)
    with own_node(
        conf=f"consumer_timeout = {milliseconds}\n",
        advanced="[{rabbit, [{channel_tick_interval, 500}]}].",
    ) as node:
        yield node


# Hypothesis: few examples in CI, more at a desk, many on request.
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", parent=settings.get_profile("ci"), max_examples=200)
settings.register_profile("long", parent=settings.get_profile("ci"), max_examples=5_000)
settings.load_profile(
    os.environ.get(
        "FASTAPI_BUS_HYPOTHESIS_PROFILE",
        "ci" if os.environ.get("CI", "").lower() == "true" else "dev",
    )
)
