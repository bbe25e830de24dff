"""Helpers for tests: wait for a condition instead of sleeping."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Awaitable, Callable, Sized

import pytest


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(0.005)


def wait_until_sync(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Like :func:`wait_until`, for code that runs outside the event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.005)


async def wait_until_async(
    look: Callable[[], Awaitable[Sized]], size: int, timeout: float = 10.0
) -> None:
    """Wait until the awaited ``look()`` has ``size`` items (a queue being filled, say)."""
    deadline = time.monotonic() + timeout
    while len(await look()) != size:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {size} items")
        await asyncio.sleep(0.01)


#: The name of a test report's property that holds a line the fault suite measured.
MEASURED = "fault suite report"

#: For tests that build (not connect) an amqp:// app: the RabbitMQ extra needs Python 3.11+.
needs_aio_pika = pytest.mark.skipif(
    importlib.util.find_spec("aio_pika") is None, reason="the rabbitmq extra is not installed"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a server a test starts)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
