"""OpenTelemetry traces: a request, the events it publishes, their handlers and what those
publish make one trace, in one process, on every transport, and across processes."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from fastapi_bus import (
    ConfigurationError,
    EventBus,
    Fault,
    MemoryTransport,
    Tracing,
    Transport,
    get_bus,
)
from tests.dlq_app import broker_transport
from tests.tracing_app import (
    Doomed,
    Flaky,
    OrderPlaced,
    build_router,
    create_app,
    span_record,
)
from tests.utils import free_port, wait_until, wait_until_sync

ROOT = Path(__file__).resolve().parent.parent
WORKER = [sys.executable, "-m", "fastapi_bus.cli", "worker"]
ATTEMPT = "fastapi_bus.message.attempt"

#: The trace of one order, by span name: each span's parent.
ORDER_TRACE = {
    "publish OrderPlaced": "POST /orders/7",
    "process {service}.reserve": "publish OrderPlaced",
    "publish StockReserved": "process {service}.reserve",
    "process {service}.notify": "publish StockReserved",
}


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def records(exporter: InMemorySpanExporter) -> list[dict[str, Any]]:
    return [span_record(span) for span in exporter.get_finished_spans()]


def named(exporter: InMemorySpanExporter, name: str, count: int = 1) -> list[dict[str, Any]]:
    """The spans called ``name``, once there are ``count`` of them."""

    def spans() -> list[dict[str, Any]]:
        return [span for span in records(exporter) if span["name"] == name]

    wait_until_sync(lambda: len(spans()) >= count, what=f"{count} span(s) {name!r}")
    return spans()


def delivered(
    event: BaseModel,
    handler: str,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    count: int = 1,
) -> list[dict[str, Any]]:
    """Publish ``event`` from the test app on memory://; the spans of its ``count``
    deliveries to ``handler``."""
    app = create_app(MemoryTransport(), service="shop", provider=provider)
    with TestClient(app) as client:
        client.portal.call(get_bus(app).publish, event)
        return named(exporter, f"process shop.{handler}", count)


def check_order_trace(
    spans: list[dict[str, Any]], service: str, system: str, root: str = "POST /orders/7"
) -> None:
    """The spans hold the whole trace of order 7, every span the child of the one before."""
    by_name = {span["name"]: span for span in spans}
    expected = {
        name.format(service=service): parent.format(service=service).replace("POST /orders/7", root)
        for name, parent in ORDER_TRACE.items()
    }
    missing = (set(expected) | {root}) - set(by_name)
    assert not missing, f"missing spans {missing} in {sorted(by_name)}"
    assert by_name[root]["kind"] == "SERVER"
    for name, parent in expected.items():
        span = by_name[name]
        assert span["trace_id"] == by_name[root]["trace_id"], name
        assert span["parent_id"] == by_name[parent]["span_id"], f"{name} is not under {parent}"
        assert span["attributes"]["messaging.system"] == system
    publish = by_name["publish OrderPlaced"]
    process = by_name[f"process {service}.reserve"]
    assert publish["kind"] == "PRODUCER"
    assert process["kind"] == "CONSUMER"
    assert publish["attributes"]["messaging.operation.type"] == "send"
    assert process["attributes"]["messaging.operation.type"] == "process"
    assert process["attributes"]["messaging.destination.name"] == "OrderPlaced"
    assert process["attributes"]["fastapi_bus.handler"] == "reserve"
    assert process["attributes"][ATTEMPT] == 1
    message_id = publish["attributes"]["messaging.message.id"]
    assert process["attributes"]["messaging.message.id"] == message_id
    # The handler's publish belongs to the conversation the order started.
    child = by_name["publish StockReserved"]["attributes"]
    assert child["messaging.message.conversation_id"] == message_id or (
        child["messaging.message.conversation_id"]
        == process["attributes"].get("messaging.message.conversation_id")
    )


def test_one_trace_from_the_request_to_the_handlers_own_publishes(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = create_app(MemoryTransport(), service="shop", provider=provider)
    with TestClient(app) as client:
        assert client.post("/orders/7").status_code == 200
        wait_until_sync(lambda: len(exporter.get_finished_spans()) >= 5, what="5 spans")
    check_order_trace(records(exporter), "shop", "memory")


def test_an_app_instrumented_by_opentelemetry_instrumentation_fastapi(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    app = create_app(MemoryTransport(), service="shop", provider=provider, server_spans=False)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    with TestClient(app) as client:
        assert client.post("/orders/7").status_code == 200
        named(exporter, "process shop.notify")
    check_order_trace(records(exporter), "shop", "memory", root="POST /orders/{order_id}")


def test_a_failure_is_recorded_and_the_span_is_an_error(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    (span,) = delivered(Doomed(reason="no stock"), "doom", provider, exporter)
    assert span["status"] == "ERROR"
    assert span["events"] == ["exception"]
    assert span["attributes"]["fastapi_bus.outcome"] == "dead_lettered"


def test_each_delivery_of_a_redelivered_message_is_a_child_of_its_publish(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    deliveries = delivered(Flaky(job_id="1"), "flaky", provider, exporter, count=2)
    (publish,) = named(exporter, "publish Flaky")
    first, second = sorted(deliveries, key=lambda s: int(s["attributes"][ATTEMPT]))
    assert first["parent_id"] == second["parent_id"] == publish["span_id"]
    assert first["attributes"][ATTEMPT] == 1
    assert (first["status"], first["attributes"]["fastapi_bus.outcome"]) == ("ERROR", "retried")
    assert second["attributes"][ATTEMPT] == 2
    assert (second["status"], second["attributes"]["fastapi_bus.outcome"]) == ("UNSET", "handled")


def test_without_tracing_messages_carry_no_trace_context() -> None:
    transport = MemoryTransport()
    bus = EventBus(transport, service="shop")
    assert bus.observer.tracer is None
    message = bus.registry.encode(OrderPlaced(order_id="1"))
    assert "traceparent" not in bus.observer.encoded(message).headers


def test_a_wrong_tracing_option_fails_at_declaration() -> None:
    with pytest.raises(ConfigurationError, match="tracing must be"):
        EventBus(MemoryTransport(), service="shop", tracing="yes")  # type: ignore[arg-type]


@pytest.fixture(
    params=[
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def broker(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, str]]:
    """A real broker's URL, a namespace (exchange or key prefix) and a service of the test's."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    suffix = uuid.uuid4().hex[:10]
    namespace = f"test-tracing-{suffix}"
    yield url, namespace, f"svc{suffix}"
    if url.startswith("redis"):
        import redis

        with redis.Redis.from_url(url) as client:
            keys = list(client.scan_iter(match="{" + namespace + "}*", count=1000))
            if keys:
                client.delete(*keys)


def system_of(transport: Transport) -> str:
    return "rabbitmq" if transport.protocol == "amqp" else transport.protocol


def test_one_trace_on_a_real_broker(
    broker: tuple[str, str, str], provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    url, namespace, service = broker
    transport = broker_transport(url, namespace)
    app = create_app(transport, service=service, provider=provider)
    with TestClient(app) as client:
        assert client.post("/orders/7").status_code == 200
        wait_until_sync(lambda: len(exporter.get_finished_spans()) >= 5, timeout=30)
    check_order_trace(records(exporter), service, system_of(transport))


def test_one_trace_across_a_web_process_and_a_worker_process(
    broker: tuple[str, str, str],
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    tmp_path: Path,
) -> None:
    url, namespace, service = broker
    spans_file = tmp_path / "worker-spans.jsonl"
    env = {
        **os.environ,
        "FASTAPI_BUS_TEST_URL": url,
        "FASTAPI_BUS_TEST_NAMESPACE": namespace,
        "FASTAPI_BUS_TEST_SERVICE": service,
        "FASTAPI_BUS_TEST_SPANS": str(spans_file),
    }
    transport = broker_transport(url, namespace)
    web = create_app(transport, service=service, provider=provider, consume=False)
    stderr = tmp_path / "worker.err"
    port = free_port()
    with stderr.open("wb") as sink:
        worker = subprocess.Popen(
            [*WORKER, "tests.tracing_app:app", "--health-port", str(port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        wait_until_sync(lambda: b"worker ready" in stderr.read_bytes(), timeout=30)
        with TestClient(web) as client:
            assert client.post("/orders/7").status_code == 200

            def worker_spans() -> list[dict[str, Any]]:
                if not spans_file.exists():
                    return []
                return [json.loads(line) for line in spans_file.read_text().splitlines()]

            wait_until_sync(lambda: len(worker_spans()) >= 3, timeout=30, what="worker spans")
        # The worker's metrics, on its health port.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/metrics")
        scraped = connection.getresponse().read().decode()
        connection.close()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    web_spans = records(exporter)
    assert {span["name"] for span in web_spans} == {"POST /orders/7", "publish OrderPlaced"}
    check_order_trace(web_spans + worker_spans(), service, system_of(transport))
    handled = 'fastapi_bus_handled_total{event="OrderPlaced",handler="reserve"} 1.0'
    assert handled in scraped.splitlines()


@pytest.mark.anyio
async def test_a_fault_is_published_from_the_failed_handlers_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    events = build_router()
    faults: list[Fault] = []

    @events.on(Fault)
    async def on_fault(fault: Fault) -> None:
        faults.append(fault)

    bus = EventBus(MemoryTransport(), service="shop", routers=[events], tracing=Tracing(provider))
    await bus.start()
    await bus.start_consuming()
    try:
        await bus.publish(Doomed(reason="no stock"))
        await wait_until(lambda: len(faults) == 1)
        await bus.wait_idle()
    finally:
        await bus.close()
    spans = {span["name"]: span for span in records(exporter)}
    failed, publish = spans["process shop.doom"], spans["publish Fault"]
    assert publish["parent_id"] == failed["span_id"]
    assert spans["process shop.on_fault"]["parent_id"] == publish["span_id"]
