"""The running bus: routes, topology, consumers, publishing and the lifecycle."""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from typing_extensions import TypedDict, Unpack

from fastapi_bus.core import headers as H
from fastapi_bus.core.exceptions import ConfigurationError, PublishError
from fastapi_bus.core.faults import FAULT_EVENT, Fault
from fastapi_bus.core.messages import Message
from fastapi_bus.core.metrics import CounterMetrics, Metrics
from fastapi_bus.core.names import validate_event_name
from fastapi_bus.core.types import AnyCallable, check_options, is_model
from fastapi_bus.pipeline.consumer import handler_consumer
from fastapi_bus.pipeline.delivery import Delivery
from fastapi_bus.pipeline.failures import FailureMiddleware
from fastapi_bus.pipeline.handler import HandlerCall, HandlerEnv
from fastapi_bus.pipeline.idempotency import (
    IdempotencyMiddleware,
    IdempotencyStore,
    MemoryIdempotencyStore,
)
from fastapi_bus.pipeline.middleware import Middleware, build_pipeline
from fastapi_bus.pipeline.policy import RetryPolicy
from fastapi_bus.routing.route import EventRoute
from fastapi_bus.routing.router import EventRouter
from fastapi_bus.runtime.deadletters import DeadLetterQueue
from fastapi_bus.runtime.limits import check_timeout, with_timeout
from fastapi_bus.runtime.publishing import (
    EncodeOptions,
    Payload,
    Publishable,
    Publisher,
    PublishItem,
    PublishManyOptions,
    PublishOptions,
    TransactionalOutbox,
    claim,
    current_publisher,
    free_publisher,
    publisher_context,
)
from fastapi_bus.runtime.registry import MAX_MESSAGE_SIZE, EventRegistry
from fastapi_bus.telemetry import Observer, Tracing
from fastapi_bus.telemetry.tracing import make_tracer
from fastapi_bus.transports.base import Consumer, Subscription, Transport

if TYPE_CHECKING:
    from fastapi import params

__all__ = ["CONSUME_ENV", "BusState", "Consume", "EventBus", "EventRegistry"]

logger = logging.getLogger("fastapi_bus")

#: Read when ``consume`` is not given: ``false`` makes a publish-only process (e.g. the web
#: processes, when workers run the handlers), so one app module serves both roles;
#: ``broadcast`` a process that runs only its ``broadcast=True`` handlers (WebSocket fan-out).
CONSUME_ENV = "FASTAPI_BUS_CONSUME"

#: What a process consumes: everything (``True``), nothing (``False``) or only the
#: ``broadcast=True`` handlers (``"broadcast"``).
Consume = bool | Literal["broadcast"]


def consume_from_env() -> Consume:
    """``FASTAPI_BUS_CONSUME`` as a :data:`Consume` value; true when unset."""
    text = os.environ.get(CONSUME_ENV, "").strip().lower()
    if text in ("", "1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    if text == "broadcast":
        return "broadcast"
    raise ConfigurationError(f"{CONSUME_ENV}={text!r}: use true, false or broadcast")


class BusState(enum.Enum):
    """Where a bus is in its life: CREATED → STARTED → CONSUMING → STARTED (draining) →
    CLOSED. CONSUMING is skipped when the process only publishes; a CLOSED bus may start
    again (an app's lifespan can run more than once, as in tests)."""

    CREATED = "created"
    STARTED = "started"
    CONSUMING = "consuming"
    CLOSED = "closed"


class BusOptions(TypedDict, total=False):
    """The options of a bus, given to :class:`~fastapi_bus.BusExtension` (which documents
    them) or to :class:`EventBus`."""

    routers: Sequence[EventRouter]
    dependencies: Sequence[params.Depends]
    middleware: Sequence[Middleware]
    consume: Consume | None
    prefetch: int
    concurrency: int | None
    shutdown_grace: float
    retry: RetryPolicy | None
    metrics: Metrics | None
    idempotency_store: IdempotencyStore | None
    publish_faults: bool | None
    outbox: TransactionalOutbox | None
    handler_timeout: float | None
    max_message_size: int | None
    tracing: bool | Tracing | None


class EventBus:
    """The bus of one service: owns the transport, the handlers and their consumers.

    You rarely build one yourself: :class:`~fastapi_bus.BusExtension` does, and runs it with the
    app's lifespan. Outside requests and handlers, publish with ``await ext.bus.publish(...)``.
    """

    def __init__(
        self, transport: Transport, *, service: str, **options: Unpack[BusOptions]
    ) -> None:
        unknown = set(options) - set(BusOptions.__annotations__)
        if unknown:
            raise ConfigurationError(f"unknown bus option(s): {', '.join(sorted(unknown))}")
        prefetch = options.get("prefetch", 10)
        concurrency = options.get("concurrency")
        consume = options.get("consume")
        retry = options.get("retry")
        metrics = options.get("metrics")
        validate_event_name(service, what="service name")
        if prefetch < 1:
            raise ConfigurationError(f"prefetch must be at least 1, got {prefetch!r}")
        if concurrency is not None and concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, got {concurrency!r}")
        self.transport = transport
        self.service = service
        self.routers: list[EventRouter] = list(options.get("routers", ()))
        self.dependencies = list(options.get("dependencies", ()))
        self.middleware = list(options.get("middleware", ()))
        if consume not in (None, True, False, "broadcast"):
            raise ConfigurationError(f"consume must be True, False or 'broadcast', got {consume!r}")
        self.consume: Consume = consume_from_env() if consume is None else consume
        #: Consume only the handlers with these names or tags (``None``: no filter).
        self.only: set[str] | None = None
        self.only_tags: set[str] | None = None
        #: Names of the handlers whose consumers are running (for health checks).
        self.consuming: set[str] = set()
        self.prefetch = prefetch
        self.concurrency = concurrency
        self.shutdown_grace = options.get("shutdown_grace", 10.0)
        self.retry = retry or RetryPolicy()
        self.metrics: Metrics = metrics if metrics is not None else CounterMetrics()
        self.idempotency_store = options.get("idempotency_store") or MemoryIdempotencyStore()
        #: The transactional outbox (``publish(..., session=...)``) and its relay, if any.
        self.outbox = options.get("outbox")
        self._publish_faults = options.get("publish_faults")
        self.handler_timeout = check_timeout(options.get("handler_timeout"), "handler_timeout")
        #: Where publishing and consuming report to the metrics hooks and the tracer.
        self.observer = Observer(
            self.metrics, make_tracer(options.get("tracing"), transport.protocol)
        )
        #: What publishes outside requests and handlers (one for all of them).
        self._free_publisher = free_publisher(self)
        self.state = BusState.CREATED
        self.registry = EventRegistry(options.get("max_message_size", MAX_MESSAGE_SIZE))
        self.routes: list[EventRoute] = []
        #: Source of ``dependency_overrides`` (the FastAPI app), set when installed.
        self.app: Any = None
        #: Each handler's route, subscription and consumer, composed once by :meth:`build`.
        self._pipelines: dict[str, tuple[EventRoute, Subscription, Consumer]] = {}
        self._built = False

    def __repr__(self) -> str:
        state = self.state.value
        return f"EventBus(service={self.service!r}, transport={self.transport!r}, state={state})"

    @property
    def dependency_overrides(self) -> Mapping[AnyCallable, AnyCallable]:
        overrides = getattr(self.app, "dependency_overrides", None)
        return overrides if overrides is not None else {}

    def include_router(self, router: EventRouter) -> None:
        """Add a router's handlers. Only before the bus starts."""
        if self._built:
            raise ConfigurationError("include routers before the bus starts")
        self.routers.append(router)

    def queue_for(self, route: EventRoute) -> str:
        """The name of a handler's queue: ``{service}.{handler name}``."""
        return f"{self.service}.{route.name}"

    # building

    def build(self) -> None:
        """Check every declaration and compose each handler's pipeline. Runs once, at start;
        call it early to fail fast (tests, CLI)."""
        if self._built:
            return
        routes = [route for router in self.routers for route in router.routes]
        seen: dict[str, EventRoute] = {}
        for route in routes:
            other = seen.get(route.name)
            if other is not None:
                raise ConfigurationError(
                    f"two handlers named {route.name!r} in service {self.service!r}: "
                    f"{other.label} and {route.label}; they would share the queue "
                    f"{self.queue_for(route)!r}. Give one another name: on(..., name='...')"
                )
            seen[route.name] = route
        for router in self.routers:
            for declaration in router.declarations:
                self.registry.add(declaration.name, declaration.model, "publishes()")
        for route in routes:
            if not route.is_pattern and is_model(route.event_type):
                self.registry.add(route.event, route.event_type, route.label)
        env = HandlerEnv(
            transport=self.transport,
            metrics=self.observer.hooks,
            overrides=lambda: self.dependency_overrides,
            owner=self,
            claim=claim,
            work_context=publisher_context,
            on_dead_letter=self._dead_lettered,
            max_message_size=self.registry.max_message_size,
        )
        for route in routes:
            plan = route.plan(self.dependencies)
            event_type = route.event_type
            if event_type is None and not route.is_pattern:
                event_type = self.registry.models.get(route.event)
            call = HandlerCall(route, plan, event_type, env)
            pipeline = build_pipeline(call, self.middleware)
            pipeline = with_timeout(pipeline, route, self, route.retry or self.retry)
            if route.idempotent:
                pipeline = IdempotencyMiddleware(
                    pipeline, store=self.idempotency_store, metrics=self.observer.hooks
                )
            failures = FailureMiddleware(pipeline, policy=route.retry or self.retry, env=env)
            subscription = Subscription(
                queue=self.queue_for(route),
                patterns=(route.event,),
                prefetch=route.prefetch or self.prefetch,
                concurrency=route.concurrency or self.concurrency,
                broadcast=route.broadcast,
            )
            consumer = handler_consumer(
                call, pipeline, failures, queue=subscription.queue, metrics=self.observer.hooks
            )
            self._pipelines[route.name] = (route, subscription, consumer)
        self.routes = routes
        for router in self.routers:
            router.freeze(f"service {self.service!r}")
        self._built = True

    # lifecycle

    async def start(self) -> None:
        """Connect and declare the topology. Publishing works from here on."""
        if self.state not in (BusState.CREATED, BusState.CLOSED):
            raise ConfigurationError(f"the bus cannot start: it is already {self.state.value}")
        self.build()
        await self.transport.start()
        try:
            for _, subscription, _ in self._pipelines.values():
                await self.transport.declare(subscription)
        except BaseException:
            await self.transport.close(grace=0)
            raise
        self.state = BusState.STARTED
        if self.outbox is not None:
            await self.outbox.start(self.send_message)
        queues = [subscription.queue for _, subscription, _ in self._pipelines.values()]
        logger.info(
            "fastapi-bus started: service %r on %s, %d handler(s), queues: %s",
            self.service,
            self.transport.url,
            len(queues),
            ", ".join(queues) or "none",
        )

    async def start_consuming(self) -> None:
        """Start delivering to the handlers (unless this process only publishes; only to the
        ``broadcast=True`` ones with ``consume="broadcast"``)."""
        if self.state is not BusState.STARTED:
            raise ConfigurationError(f"the bus cannot start consuming: it is {self.state.value}")
        if not self.consume:
            return
        for route, subscription, consumer in self._pipelines.values():
            if not self.selects(route) or (self.consume == "broadcast" and not route.broadcast):
                continue
            await self.transport.consume(
                subscription, self.observer.consumer(consumer, route.name, subscription.queue)
            )
            self.consuming.add(route.name)
        self.state = BusState.CONSUMING

    def selects(self, route: EventRoute) -> bool:
        """Whether this process consumes ``route``, given :attr:`only` and :attr:`only_tags`."""
        if self.only is None and self.only_tags is None:
            return True
        return route.name in (self.only or ()) or not (self.only_tags or set()).isdisjoint(
            route.tags
        )

    async def stop_consuming(self, grace: float | None = None) -> None:
        """Stop taking messages; in-flight handlers get ``grace`` seconds (default
        ``shutdown_grace``) to finish. Publishing keeps working until :meth:`close`."""
        if self.state is BusState.CONSUMING:
            self.state = BusState.STARTED
            self.consuming.clear()
            await self.transport.stop_consuming(self.shutdown_grace if grace is None else grace)

    async def close(self, grace: float | None = None) -> None:
        """Stop consuming, let in-flight handlers finish within ``grace`` seconds (default
        ``shutdown_grace``), then disconnect. Unfinished messages go back to their queues."""
        if self.state in (BusState.CREATED, BusState.CLOSED):
            self.state = BusState.CLOSED
            return
        self.state = BusState.CLOSED
        self.consuming.clear()
        if self.outbox is not None:
            await self.outbox.stop()
        await self.transport.close(grace=self.shutdown_grace if grace is None else grace)
        logger.info("fastapi-bus stopped: service %r on %s", self.service, self.transport.url)

    # publishing

    def encode(
        self, event: Publishable, payload: Payload = None, **options: Unpack[EncodeOptions]
    ) -> Message:
        """Validate an event and turn it into a message; raises and sends nothing if invalid."""
        check_options(options, EncodeOptions, "encode")
        return self.encode_message(
            event,
            payload,
            options.get("headers"),
            options.get("correlation_id"),
            options.get("causation_id"),
        )

    def encode_message(
        self,
        event: Publishable,
        payload: Payload,
        headers: Mapping[str, str] | None,
        correlation_id: str | None,
        causation_id: str | None,
    ) -> Message:
        """:meth:`encode` with its options as arguments (what publishers call)."""
        state = self.state
        if state is not BusState.CONSUMING and state is not BusState.STARTED:
            self._check_can_publish(event)  # raises
        message = self.registry.message(event, payload, headers, correlation_id, causation_id)
        return message if self.observer.tracer is None else self.observer.encoded(message)

    def _check_can_publish(self, event: Publishable) -> None:
        state = self.state
        if state is not BusState.STARTED and state is not BusState.CONSUMING:
            what = event if isinstance(event, str) else type(event).__name__
            raise PublishError(
                f"cannot publish {what!r}: the bus is {state.value} (it runs "
                "while the app's lifespan does: use `with TestClient(app)` in tests)"
            )

    async def store_message(
        self, session: Any, message: Message, *, delay: float | None, key: str | None
    ) -> None:
        """Keep an encoded message in the transactional outbox, in ``session``'s transaction."""
        if self.outbox is None:
            raise ConfigurationError(
                f"publishing {message.name!r} with session= needs a transactional outbox: "
                "BusExtension(..., outbox=SQLAlchemyOutbox(engine))"
            )
        await self.outbox.add(session, message, delay=delay, key=key)

    def send_message(
        self, message: Message, *, delay: float | None = None
    ) -> Coroutine[Any, Any, None]:
        """Send an encoded message (outboxes call this when they flush); raises at the call if
        the bus is not running. Not itself a coroutine function: what it returns is the
        transport's publish when nothing observes the send, one coroutine less per publish."""
        state = self.state
        if state is not BusState.CONSUMING and state is not BusState.STARTED:
            self._check_can_publish(message.name)  # raises
        if self.observer.observes_sends:
            return self.observer.send(message, delay, self.transport.publish)
        return self.transport.publish(message, delay=delay)

    def send_message_nowait(self, message: Message) -> bool:
        """Send an encoded message at once, where the transport can without waiting
        (``memory://``, a queue with room) and nothing observes the send: True once sent;
        False, doing nothing, otherwise (then await :meth:`send_message`)."""
        state = self.state
        if state is not BusState.CONSUMING and state is not BusState.STARTED:
            return False  # ``send_message`` says why not
        return not self.observer.observes_sends and self.transport.publish_nowait(message)

    async def send_messages(self, messages: Sequence[tuple[Message, float | None]]) -> None:
        """Send encoded messages (each with its delay) in this order: an outbox flushing the
        events of a request or a handler. Transports that can keep several in flight in order
        (Kafka) do, so the flush waits for the broker about once, not once per event. Raises
        at the first that fails; where several were in flight, later ones may have been sent.
        """
        if len(messages) == 1 or self.observer.tracer is not None:
            # One publish span per message when tracing.
            for message, delay in messages:
                await self.send_message(message, delay=delay)
            return
        state = self.state
        if state is not BusState.CONSUMING and state is not BusState.STARTED:
            self._check_can_publish(messages[0][0].name)  # raises
        start = time.perf_counter()
        await self.transport.publish_many(messages)
        if self.observer.observes_sends:  # a ``published`` hook (not tracing: see above)
            elapsed = time.perf_counter() - start
            for message, _ in messages:
                self.observer.metrics.published(message.name, elapsed)

    def publish(
        self, event: Publishable, payload: Payload = None, **options: Unpack[PublishOptions]
    ) -> Coroutine[Any, Any, str]:
        """Publish an event; inside a request or a handler, it joins that unit of work (see
        :meth:`Publisher.publish`, which takes the same options). Returns the message id."""
        # ``_publisher`` and ``current_publisher``, written out: called at every publish.
        current = publisher_context.get()
        if current is None:
            publisher = self._free_publisher
        elif isinstance(current, list):  # a handler call's work cell: ``[bus, message]``
            publisher = claim(current).publisher if current[0] is self else self._free_publisher
        else:
            publisher = current if current._bus is self else self._free_publisher
        if not options:
            if publisher._loop is None:
                # ``Publisher.publish`` written out: no options to check, and a publisher tied
                # to no event loop (the bus's own, outside requests and handlers) checks none.
                return publisher._publish(event, payload, options)
            return publisher.publish(event, payload)
        return publisher.publish(event, payload, **options)

    def publish_many(
        self, events: Iterable[PublishItem], **options: Unpack[PublishManyOptions]
    ) -> Coroutine[Any, Any, list[str]]:
        """Validate several events, then publish all of them in this order (see
        :meth:`Publisher.publish_many`, which takes the same options); inside a request or a
        handler, they join that unit of work. Returns their message ids, in the same order."""
        return self._publisher().publish_many(events, **options)

    def publish_sync(
        self, event: Publishable, payload: Payload = None, **options: Unpack[PublishOptions]
    ) -> str:
        """:meth:`publish` from a worker thread (see :meth:`Publisher.publish_sync`)."""
        return self._publisher().publish_sync(event, payload, **options)

    def _publisher(self) -> Publisher:
        publisher = current_publisher()
        if publisher is None or publisher._bus is not self:
            publisher = self._free_publisher
        return publisher

    @property
    def publishes_faults(self) -> bool:
        """Whether dead-lettering publishes a :class:`Fault` event: as configured, else only
        when a handler of this service subscribes to faults."""
        if self._publish_faults is not None:
            return self._publish_faults
        return any(route.event == FAULT_EVENT for route in self.routes)

    @property
    def dead_letters(self) -> DeadLetterQueue:
        """Tools to list, replay and purge this bus's dead-lettered messages."""
        return DeadLetterQueue(self.transport, self.handler_queues)

    def handler_queues(self) -> dict[str, str]:
        """Each handler's queue, by handler name (builds the bus if needed)."""
        self.build()
        return {route.name: self.queue_for(route) for route in self.routes}

    async def _dead_lettered(self, delivery: Delivery, dead: Message, reason: str) -> None:
        """Publish a :class:`Fault` for a dead-lettered message, when faults are published."""
        if not self.publishes_faults or dead.name == FAULT_EVENT:
            return
        headers = dead.headers
        fault = Fault(
            message_id=dead.id,
            event=dead.name,
            service=self.service,
            handler=delivery.route.name,
            queue=delivery.queue,
            reason=reason,
            exception_type=headers.get(H.EXCEPTION_TYPE),
            exception_message=headers.get(H.EXCEPTION_MESSAGE),
            attempts=dead.attempt,
            failed_at=datetime.now(timezone.utc),
            correlation_id=dead.correlation_id,
        )
        encoded = self.encode(fault, correlation_id=dead.correlation_id, causation_id=dead.id)
        await self.observer.send(encoded, None, self.transport.publish)

    # testing support

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until every queue is empty and no handler is running (``memory://`` only)."""
        pending = getattr(self.transport, "pending", None)
        if pending is None:
            raise ConfigurationError("wait_idle() needs a transport that can count pending work")
        deadline = time.monotonic() + timeout
        quiet = 0
        # Two looks in a row, so that a handler's just-flushed events are counted too.
        while quiet < 2:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bus was still busy after {timeout}s ({pending()} pending)")
            quiet = quiet + 1 if pending() == 0 else 0
            await asyncio.sleep(0.001)
