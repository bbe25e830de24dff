"""Log lines about a message carry its ids as record attributes (``extra=``)."""

from __future__ import annotations

import logging

import pytest

from fastapi_bus import (
    EventBus,
    EventRouter,
    MemoryTransport,
    Message,
    MessageLogFilter,
    RetryPolicy,
)
from fastapi_bus.core.logs import LOG_FIELDS, readers
from tests.helpers import OrderPlaced
from tests.utils import wait_until

pytestmark = pytest.mark.anyio


async def test_retry_and_dead_letter_lines_carry_the_message_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = EventRouter()

    @events.on(OrderPlaced, retry=RetryPolicy(attempts=1, delays=(0.01,)))
    async def charge(event: OrderPlaced) -> None:
        raise ConnectionError("payment service down")

    bus = EventBus(MemoryTransport(), service="shop", routers=[events])
    caplog.set_level(logging.WARNING, logger="fastapi_bus")
    await bus.start()
    await bus.start_consuming()
    try:
        message_id = await bus.publish(OrderPlaced(order_id="1", total=1), correlation_id="req-9")
        await wait_until(lambda: len(about(caplog.records, message_id)) == 2)
    finally:
        await bus.close()
    retried, dead = about(caplog.records, message_id)
    for record in (retried, dead):
        assert {field: getattr(record, field) for field in LOG_FIELDS} == {
            "message_id": message_id,
            "event_name": "OrderPlaced",
            "handler": "charge",
            "correlation_id": "req-9",
        }
    assert "redelivering" in retried.getMessage()
    assert "dead-lettering" in dead.getMessage()


def about(records: list[logging.LogRecord], message_id: str) -> list[logging.LogRecord]:
    return [record for record in records if getattr(record, "message_id", None) == message_id]


def test_message_extra_names_no_attribute_a_log_record_has() -> None:
    from fastapi_bus.core.logs import message_extra

    record = logging.makeLogRecord({})
    extra = message_extra(Message(name="OrderPlaced", body=b"{}"), "charge")
    assert set(extra) == set(LOG_FIELDS)
    assert not any(hasattr(record, field) for field in extra)


async def test_the_filter_gives_a_handlers_own_lines_the_message_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = EventRouter()
    log = logging.getLogger("shop.billing")

    @events.on(OrderPlaced)
    async def charge(event: OrderPlaced) -> None:
        log.warning("charging order %s", event.order_id)

    @events.on(OrderPlaced)
    def invoice(event: OrderPlaced) -> None:  # runs in a worker thread
        log.warning("invoicing order %s", event.order_id)

    caplog.handler.addFilter(MessageLogFilter())
    bus = EventBus(MemoryTransport(), service="shop", routers=[events])
    await bus.start()
    await bus.start_consuming()
    try:
        log.warning("outside any handler")
        message_id = await bus.publish(OrderPlaced(order_id="1", total=1), correlation_id="req-3")
        await wait_until(lambda: len(about(caplog.records, message_id)) == 2)
    finally:
        await bus.close()
    lines = {record.getMessage(): record for record in caplog.records}
    assert getattr(lines["outside any handler"], "message_id", None) is None
    for text, handler in (("charging order 1", "charge"), ("invoicing order 1", "invoice")):
        record = lines[text]
        assert (record.message_id, record.handler, record.correlation_id) == (  # type: ignore[attr-defined]
            message_id,
            handler,
            "req-3",
        )


async def test_a_filter_added_while_consuming_gives_the_next_messages_ids(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Consumers bind the delivery context only once a filter exists: start without one.
    monkeypatch.setattr(readers, "any", False)
    events = EventRouter()
    log = logging.getLogger("shop.billing")

    @events.on(OrderPlaced)
    async def charge(event: OrderPlaced) -> None:
        log.warning("charging order %s", event.order_id)

    bus = EventBus(MemoryTransport(), service="shop", routers=[events])
    await bus.start()
    await bus.start_consuming()
    try:
        await bus.publish(OrderPlaced(order_id="1", total=1))
        await wait_until(lambda: any(r.getMessage() == "charging order 1" for r in caplog.records))
        caplog.handler.addFilter(MessageLogFilter())
        second = await bus.publish(OrderPlaced(order_id="2", total=1))
        await wait_until(lambda: len(about(caplog.records, second)) == 1)
    finally:
        await bus.close()
    (record,) = about(caplog.records, second)
    assert (record.getMessage(), record.handler) == ("charging order 2", "charge")  # type: ignore[attr-defined]
