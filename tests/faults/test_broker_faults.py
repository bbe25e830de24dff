"""A broker stopped and a broker killed under load: nothing that was confirmed is lost.

Three publishers and two ``fastapi-bus worker`` processes run a stream of events through a
RabbitMQ node of the suite's own, which is stopped (``rabbitmqctl stop_app``, then
``start_app``) and then killed (SIGKILL of its Erlang VM, then started again). Nobody restarts
the app: the publishers and the workers reconnect by themselves. At the end, every event whose
publish returned was handled; the duplicates are counted and reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.conftest import events_at_least, rounds
from tests.faults.stream import Stream
from tests.rabbitmq_nodes import RabbitNode

pytestmark = [pytest.mark.anyio, pytest.mark.faults, pytest.mark.rabbitmq]

RECONNECTED = "reconnected to RabbitMQ"


async def test_a_stopped_and_a_killed_broker_lose_nothing(
    node: RabbitNode, out: Path, report: Callable[[str], None]
) -> None:
    stream = Stream(node.url, out, events_at_least=events_at_least())
    try:
        await stream.start()
        await stream.wait_progress()
        workers = [worker.pid for worker in stream.workers]
        for number in range(rounds(1)):
            # Stopped: RabbitMQ closes every connection politely, the VM stays up.
            await asyncio.to_thread(node.stop_app)
            await asyncio.to_thread(node.start_app)
            await stream.wait_progress()
            # Each worker is back before the next fault (the stream may flow through one).
            await stream.wait_logged(RECONNECTED, 2 * number + 1)
            # Killed: no goodbye; the queue's contents come back from disk.
            await asyncio.to_thread(node.kill)
            await asyncio.to_thread(node.start)
            await stream.wait_progress()
            await stream.wait_logged(RECONNECTED, 2 * number + 2)
        measured = await stream.finish()
    except BaseException:
        await stream.abort()
        raise
    report(measured.line(f"broker stopped and killed x{rounds(1)}"))
    assert [worker.pid for worker in stream.workers] == workers
    assert measured.missing == 0
    assert measured.publish_errors == 0, stream.errors[:5]
    assert measured.published >= events_at_least()
    for number in range(len(stream.workers)):
        log = stream.worker_log(number)
        # One line when the connection is lost (with the reason), one when it is back...
        assert log.count("lost the connection to RabbitMQ") >= 2 * rounds(1), log
        assert log.count(RECONNECTED) >= 2 * rounds(1), log
        # ...instead of aiormq's and aio-pika's lines per attempt and per lost connection.
        for noise in ("error when creating transport", "Cancelling cause reader", "Connection to"):
            assert noise not in log, log
