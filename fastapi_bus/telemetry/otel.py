"""Spans with the OpenTelemetry API (the ``otel`` extra); imported only when tracing is on.

* Publishing makes a ``PRODUCER`` span, ``publish {event}``, a child of the context the event was
  published in (held across outboxes and threads in the message's headers), and sends the
  message with that span's context in its headers (``traceparent``/``tracestate`` with the
  default W3C propagator; whatever propagators are configured otherwise).
* Each delivery to a handler runs in a ``CONSUMER`` span, ``process {queue}``, a *child* of the
  publish span, whose context it takes from the message's headers: a request, the events it
  publishes, their handlers and what they publish make one trace, across processes.
* A handler's failure is recorded on its span as an exception event; a delivery that ends in a
  redelivery or a dead letter sets the span's status to ``ERROR``.

Attributes follow the OpenTelemetry messaging semantic conventions.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from fastapi_bus.core.messages import Message
from fastapi_bus.telemetry.tracer import Consume, MessageTracer, Send

__all__ = ["OpenTelemetryTracer"]

#: The instrumentation scope of the spans.
SCOPE = "fastapi_bus"
#: Attributes of our own (the conventions have none for them).
HANDLER = "fastapi_bus.handler"
ATTEMPT = "fastapi_bus.message.attempt"
OUTCOME = "fastapi_bus.outcome"


#: The header names of the propagator last seen, and that propagator (it rarely changes).
_fields: tuple[object, frozenset[str]] = (None, frozenset())


_EMPTY = Context()


def _context_fields() -> frozenset[str]:
    """The headers the configured propagators read and write."""
    global _fields
    textmap = propagate.get_global_textmap()
    if _fields[0] is not textmap:
        _fields = (textmap, frozenset(textmap.fields))
    return _fields[1]


class OpenTelemetryTracer(MessageTracer):
    """The spans of one bus, from ``tracer_provider`` (default: the global provider)."""

    def __init__(self, tracer_provider: Any = None, *, system: str) -> None:
        self._tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        self.system = system

    def _attributes(self, message: Message, operation: str, kind: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "messaging.system": self.system,
            "messaging.operation.name": operation,
            "messaging.operation.type": kind,
            "messaging.destination.name": message.name,
            "messaging.message.id": message.id,
            "messaging.message.body.size": len(message.body),
        }
        if message.correlation_id:
            attributes["messaging.message.conversation_id"] = message.correlation_id
        if self.system == "rabbitmq":
            attributes["messaging.rabbitmq.destination.routing_key"] = message.name
        return attributes

    def stamp(self, message: Message) -> Message:
        if not trace.get_current_span().get_span_context().is_valid:
            return message
        fields = _context_fields()
        if not fields.isdisjoint(message.headers):
            return message
        headers = dict(message.headers)
        propagate.inject(headers)
        return message.replace(headers=headers)

    async def send(self, message: Message, delay: float | None, send: Send) -> None:
        headers = message.headers
        fields = _context_fields()
        carried = not fields.isdisjoint(headers)
        parent = propagate.extract(headers) if carried else None
        span = self._tracer.start_span(
            f"publish {message.name}",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes=self._attributes(message, "publish", "send"),
        )
        context = trace.set_span_in_context(span, parent)
        carrier = {key: value for key, value in headers.items() if key not in fields}
        propagate.inject(carrier, context=context)
        if carried or carrier:
            message = message.replace(headers=carrier)
        await _run(span, context, send(message, delay=delay))

    async def process(self, message: Message, handler: str, queue: str, consume: Consume) -> None:
        headers = message.headers
        # No context in the headers: a new trace (not the consumer task's context).
        parent = _EMPTY if _context_fields().isdisjoint(headers) else propagate.extract(headers)
        attributes = self._attributes(message, "process", "process")
        attributes["messaging.consumer.group.name"] = queue
        attributes["messaging.destination.subscription.name"] = queue
        attributes[HANDLER] = handler
        attributes[ATTEMPT] = message.attempt
        span = self._tracer.start_span(
            f"process {queue}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        await _run(span, trace.set_span_in_context(span, parent), consume(message))

    # The metrics hooks: called inside the delivery's span.

    def handled(self, handler: str, event: str, seconds: float) -> None:
        trace.get_current_span().set_attribute(OUTCOME, "handled")

    def failed(self, handler: str, event: str, exception: BaseException) -> None:
        trace.get_current_span().record_exception(exception)

    def retried(self, handler: str, event: str, delay: float) -> None:
        span = trace.get_current_span()
        span.set_attribute(OUTCOME, "retried")
        span.set_status(Status(StatusCode.ERROR, f"failed; redelivered in {delay:g}s"))

    def dead_lettered(self, handler: str, event: str, reason: str) -> None:
        span = trace.get_current_span()
        span.set_attribute(OUTCOME, "dead_lettered")
        span.set_status(Status(StatusCode.ERROR, f"dead-lettered: {reason.splitlines()[0]}"))

    def skipped(self, handler: str, event: str) -> None:
        trace.get_current_span().set_attribute(OUTCOME, "skipped")


async def _run(span: Span, context: Context, work: Awaitable[None]) -> None:
    """Await ``work`` with ``span`` current, then end it (recording an exception)."""
    token = otel_context.attach(context)
    try:
        await work
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        otel_context.detach(token)
        span.end()
