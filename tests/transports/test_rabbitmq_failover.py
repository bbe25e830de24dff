"""Broker addresses, the start-up connect deadline, connection logging and failover between
several addresses (through two TCP proxies in front of the test server)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator

import pytest

from fastapi_bus.core.exceptions import ConfigurationError, TransportError
from fastapi_bus.core.messages import Message
from fastapi_bus.transports import transport_from_url
from fastapi_bus.transports.base import redact_url
from fastapi_bus.transports.rabbitmq import RabbitMQTransport
from fastapi_bus.transports.rabbitmq.addresses import parse_addresses
from tests.transports.test_rabbitmq import Broker, Recorder, TcpProxy, sub
from tests.transports.test_rabbitmq import broker as broker
from tests.transports.test_rabbitmq import proxy as proxy
from tests.utils import free_port, wait_until

pytestmark = pytest.mark.anyio

SECRET = "Pa55-w0rd"


def attempt_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What aiormq and aio-pika said about each connection attempt, from INFO up (fastapi-bus
    says it once instead)."""
    return [
        str(record.msg)
        for record in caplog.records
        if record.name in ("aiormq.connection", "aio_pika.robust_connection")
        and record.levelno >= logging.INFO
        and "Cancelling cause reader" not in str(record.msg)  # once per lost connection
    ]


# addresses


def test_a_multi_host_url_is_one_url_per_node() -> None:
    addresses = parse_addresses(
        f"amqp://shop:{SECRET}@rabbit1:5672,rabbit2:5673,[::1]:5674/prod?heartbeat=30"
    )
    assert addresses.urls == (
        f"amqp://shop:{SECRET}@rabbit1:5672/prod?heartbeat=30",
        f"amqp://shop:{SECRET}@rabbit2:5673/prod?heartbeat=30",
        f"amqp://shop:{SECRET}@[::1]:5674/prod?heartbeat=30",
    )
    assert (
        addresses.display
        == "amqp://shop:***@rabbit1:5672,rabbit2:5673,[::1]:5674/prod?heartbeat=30"
    )
    assert addresses.redacted(1) == "amqp://shop:***@rabbit2:5673/prod?heartbeat=30"
    assert addresses.passwords == {SECRET}


def test_a_list_of_urls_may_differ_in_credentials() -> None:
    addresses = parse_addresses(["amqp://a:one@h1/", "amqp://b:two@h2:5673/"])
    assert addresses.urls == ("amqp://a:one@h1/", "amqp://b:two@h2:5673/")
    assert addresses.passwords == {"one", "two"}
    assert addresses.display == "amqp://a:***@h1,h2:5673/"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("amqp://u:p@h1,,h2/", "empty host"),
        ("amqp://u:p@h1:5672,h2:port/", "bad port"),
        ("amqp://u:p@h1,h1/", "listed twice"),
        (["amqp://u:p@h1/", "amqps://u:p@h2/"], "mix amqp"),
        ("redis://u:p@h1/", "amqp:// or amqps://"),
        ([], "at least one"),
        ("amqp://u:p@h1/?connect_timeout=soon", "positive number"),
        ("amqp://u:p@h1/?connect_timeout=0", "positive number"),
    ],
)
def test_bad_addresses_are_refused_without_the_password(url: str | list[str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        RabbitMQTransport(url)
    assert "u:p@" not in str(caught.value)


def test_redact_url_masks_every_form() -> None:
    assert redact_url("amqp://u:pw@h1:1,h2:2/v?x=1") == "amqp://u:***@h1:1,h2:2/v?x=1"
    assert redact_url("amqp://u:pw@[::1]:5672/") == "amqp://u:***@[::1]:5672/"
    assert redact_url("amqp://u@h/") == "amqp://u@h/"
    assert redact_url("memory://") == "memory://"


def test_connect_timeout_comes_from_the_url_unless_given() -> None:
    url = "amqp://guest:guest@127.0.0.1:5672/?connect_timeout=2.5&heartbeat=30"
    from_url = transport_from_url(url)
    assert isinstance(from_url, RabbitMQTransport)
    assert from_url.connect_timeout == 2.5
    assert RabbitMQTransport(url, connect_timeout=7).connect_timeout == 7
    assert RabbitMQTransport("amqp://guest:guest@127.0.0.1/").connect_timeout == 30.0


# connecting


async def test_an_unreachable_broker_fails_at_the_urls_deadline_logging_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"amqp://guest:{SECRET}@127.0.0.1:{free_port()}/?connect_timeout=1.5"
    transport = RabbitMQTransport(url)
    with caplog.at_level(logging.DEBUG), pytest.raises(TransportError) as caught:
        await transport.start()
    error = str(caught.value)
    assert "within 1.5s" in error
    attempts = int(error.split("(")[1].split(" attempt")[0])
    assert attempts >= 2
    ours = [r for r in caplog.records if r.name == "fastapi_bus.rabbitmq" and r.levelno >= 30]
    assert len(ours) == 1 and "retrying for up to 1.5s" in ours[0].getMessage()
    assert attempt_lines(caplog) == []
    assert SECRET not in caplog.text and SECRET not in error


@pytest.mark.rabbitmq
async def test_start_reports_how_many_attempts_it_took(
    broker: Broker, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    transport = broker.make(proxy.url, connect_timeout=30, auto_delete_topology=True)
    with caplog.at_level(logging.DEBUG):
        starting = asyncio.create_task(transport.start())
        await wait_until(lambda: "retrying" in caplog.text)
        await proxy.listen()
        await starting
    ours = [r.getMessage() for r in caplog.records if r.name == "fastapi_bus.rabbitmq"]
    warnings = [r for r in caplog.records if r.name == "fastapi_bus.rabbitmq" and r.levelno >= 30]
    assert len(warnings) == 2, ours
    assert "retrying" in warnings[0].getMessage()
    assert "connected to RabbitMQ at" in warnings[1].getMessage()
    assert "attempts" in warnings[1].getMessage()
    assert attempt_lines(caplog) == []


def test_without_logging_configured_nothing_reaches_stderr() -> None:
    script = f"""
        import asyncio
        from fastapi_bus.transports.rabbitmq import RabbitMQTransport

        async def main():
            transport = RabbitMQTransport("amqp://guest:guest@127.0.0.1:{free_port()}/",
                                          connect_timeout=1)
            try:
                await transport.start()
            except Exception as exc:
                print(type(exc).__name__)

        asyncio.run(main())
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "TransportError"
    assert done.stderr == ""


# failover


@pytest.fixture
async def proxies(rabbitmq_url: str) -> AsyncIterator[tuple[TcpProxy, TcpProxy]]:
    first, second = TcpProxy(rabbitmq_url), TcpProxy(rabbitmq_url)
    yield first, second
    await first.close()
    await second.close()


def multi_host(first: TcpProxy, second: TcpProxy) -> str:
    return f"amqp://guest:guest@127.0.0.1:{first.port},127.0.0.1:{second.port}/"


@pytest.mark.rabbitmq
async def test_start_skips_an_address_that_is_down(
    broker: Broker, proxies: tuple[TcpProxy, TcpProxy]
) -> None:
    first, second = proxies
    await second.listen()
    transport = await broker.start(
        multi_host(first, second), connect_timeout=30, auto_delete_topology=True
    )
    assert transport.connected
    assert f"127.0.0.1:{first.port},127.0.0.1:{second.port}" in transport.url


@pytest.mark.rabbitmq
async def test_a_lost_node_fails_over_to_the_next_address_and_back(
    broker: Broker, proxies: tuple[TcpProxy, TcpProxy], caplog: pytest.LogCaptureFixture
) -> None:
    first, second = proxies
    await first.listen()
    await second.listen()
    transport = await broker.start(
        multi_host(first, second), reconnect_interval=0.1, auto_delete_topology=True
    )
    recorder = Recorder()
    await transport.consume(sub(broker.queue()), recorder)

    async def round_trip(number: int) -> None:
        await transport.publish(Message(name="test.event", body=str(number).encode()))
        await wait_until(lambda: len(recorder.messages) == number, timeout=30)

    await round_trip(1)
    with caplog.at_level(logging.INFO, logger="fastapi_bus.rabbitmq"):
        # The node behind the first address dies: the connection moves to the second.
        await first.refuse()
        first.cut()
        await round_trip(2)
        assert f"reconnected to RabbitMQ at amqp://guest:***@127.0.0.1:{second.port}/" in (
            caplog.text
        )
        # Then the second dies, the first is back: it moves back.
        await first.listen()
        await second.refuse()
        second.cut()
        await round_trip(3)
        assert f"reconnected to RabbitMQ at amqp://guest:***@127.0.0.1:{first.port}/" in (
            caplog.text
        )
    ours = [r.getMessage() for r in caplog.records if r.name == "fastapi_bus.rabbitmq"]
    lost = [m for m in ours if "lost the connection" in m]
    assert len(lost) == 2
    assert [m.body for m in recorder.messages] == [b"1", b"2", b"3"]
    assert attempt_lines(caplog) == []


# refused publishes


@pytest.mark.rabbitmq
async def test_a_nacked_publish_is_sent_again_until_the_publish_timeout(broker: Broker) -> None:
    transport = await broker.start(publish_timeout=1.0, auto_delete_topology=True)
    queue = broker.queue("full")
    async with broker.raw() as channel:
        # A queue that refuses (nacks) publishes while it holds one message.
        declared = await channel.declare_queue(
            queue, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
        )
        await declared.bind(transport.exchange, "test.event")
        await transport.publish(Message(name="test.event", body=b"1"))
        with pytest.raises(TransportError, match=r"within 1s \(refused with basic.nack"):
            await transport.publish(Message(name="test.event", body=b"2"))

        transport._confirmed.timeout = 30.0
        refused_on = transport._publishing.channel
        second = asyncio.create_task(transport.publish(Message(name="test.event", body=b"3")))
        # Refused: the transport opens a new channel to publish again, and waits meanwhile.
        await wait_until(lambda: transport._publishing.channel is not refused_on)
        assert not second.done()
        await declared.purge()
        await asyncio.wait_for(second, 30)
        assert (await declared.get()).body == b"3"
