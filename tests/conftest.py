from __future__ import annotations

import importlib.util

import pytest

# The RabbitMQ extra needs Python 3.11+: where it is not installed, the tests of the transport
# and those that describe amqp:// apps cannot even load.
if importlib.util.find_spec("aio_pika") is None:
    collect_ignore_glob = [
        "transports/test_rabbitmq*.py",
        "test_rabbitmq_bus.py",
        "test_asyncapi*.py",
        "faults/*",
    ]


@pytest.fixture
def anyio_backend() -> str:
    # aio-pika runs on asyncio only, and so does fastapi-bus.
    return "asyncio"


def _reachable(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The RabbitMQ server the broker tests talk to. Under CI they must run, never skip."""
    import os
    from urllib.parse import urlsplit

    url = os.environ.get("FASTAPI_BUS_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
    parts = urlsplit(url)
    if not _reachable(parts.hostname or "127.0.0.1", parts.port or 5672):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"RabbitMQ is not reachable at {parts.hostname}:{parts.port} (CI=true)")
        pytest.skip("RabbitMQ is not reachable; set FASTAPI_BUS_RABBITMQ_URL or start one")
    return url
