from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.utils import MEASURED

if TYPE_CHECKING:
    from fastapi_bus import EventBus

# The RabbitMQ extra needs Python 3.11+: where it is not installed, the tests of the transport
# and those that describe amqp:// apps cannot even load.
if importlib.util.find_spec("redis") is None:
    collect_ignore_glob = ["transports/test_redis*.py", "test_redis*.py"]
if importlib.util.find_spec("aio_pika") is None:
    collect_ignore_glob = [
        *globals().get("collect_ignore_glob", []),
        "transports/test_rabbitmq*.py",
        "reliability/test_rabbitmq*.py",
        "test_asyncapi*.py",
        "faults/*",
    ]


# Tests that share a server under fixed names run in one process when the suite runs under
# pytest-xdist (`--dist loadgroup`); the rest (memory://, Kafka on each process's own Tansu
# broker) spread over the processes.
_SHARED_SERVERS = {
    "rabbitmq": "rabbitmq",
    "faults": "rabbitmq",
    "rabbitmq_url": "rabbitmq",
    "redis": "redis",
    "redis_url": "redis",
    "postgres": "postgres",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = {mark.name for mark in item.iter_markers()} | set(getattr(item, "fixturenames", ()))
        # One group a test: the first server it names (a test that needs two servers runs
        # beside the other server's group, whose names it does not use).
        group = next((group for name, group in _SHARED_SERVERS.items() if name in names), None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The lines the fault suite measured (tests/faults), at the end of the run. Here, not in
    tests/faults/conftest.py: under pytest-xdist, the process that prints never loads that."""
    lines = [
        value
        for outcome in ("passed", "failed")
        for test in terminalreporter.stats.get(outcome, [])
        if getattr(test, "when", None) == "call"
        for name, value in getattr(test, "user_properties", ())
        if name == MEASURED
    ]
    if lines:
        terminalreporter.section("fault suite: what was measured")
        for line in lines:
            terminalreporter.write_line(str(line))


@pytest.fixture
def anyio_backend() -> str:
    # aio-pika runs on asyncio only, and so does fastapi-bus.
    return "asyncio"


def _broker_url(broker: str, variable: str, default: str) -> str:
    """The URL of a broker the tests talk to, from ``variable``. When nothing answers there the
    tests that need it are skipped, except under CI, where they must run."""
    import os
    import socket
    from urllib.parse import urlsplit

    url = os.environ.get(variable, default)
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 0), timeout=1):
            return url
    except OSError:
        pass
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{broker} is not reachable at {parts.hostname}:{parts.port} (CI=true)")
    pytest.skip(f"{broker} is not reachable; set {variable} or start one")


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The RabbitMQ server the broker tests talk to."""
    return _broker_url("RabbitMQ", "FASTAPI_BUS_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server the broker tests talk to."""
    return _broker_url("Redis", "FASTAPI_BUS_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of the test's own; every key under it is deleted afterwards."""
    import uuid

    import redis

    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match="{" + prefix + "}*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The Kafka bootstrap servers the broker tests talk to: ``FASTAPI_BUS_KAFKA_BOOTSTRAP``
    (``host:9092,host2:9092``), or else a Tansu broker (requirements/tansu.txt) started here
    on a free port, in memory, and killed at the end of the session."""
    import os

    given = os.environ.get("FASTAPI_BUS_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    from tests.kafka_broker import tansu

    with tansu() as bootstrap:
        yield bootstrap


@pytest.fixture
async def running() -> AsyncIterator[list[EventBus]]:
    """Buses a test started (append them); closed at the end of the test."""
    buses: list[EventBus] = []
    yield buses
    for bus in buses:
        await bus.close(grace=1)
