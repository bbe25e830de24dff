"""Plugging the bus into a FastAPI app: lifespan, middleware and the ``FastAPI`` subclass."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, runtime_checkable

import fastapi
from fastapi import params
from typing_extensions import Unpack

from fastapi_bus.asyncapi.docs import DEFAULT_CSS_URL, DEFAULT_JS_URL, install_asyncapi_routes
from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.routing.router import EventRouter
from fastapi_bus.runtime.bus import BusOptions, EventBus
from fastapi_bus.transports import Transport, transport_from_url
from fastapi_bus.web.logs import server_logging
from fastapi_bus.web.metrics import install_metrics_route, scrapable
from fastapi_bus.web.publisher import PublisherMiddleware

__all__ = ["BusExtension", "Extension", "FastAPI", "get_bus"]

STATE_KEY = "fastapi_bus"


@runtime_checkable
class Extension(Protocol):
    """Anything that can plug itself into an app."""

    def install(self, app: fastapi.FastAPI) -> None: ...


class FastAPI(fastapi.FastAPI):
    """``fastapi.FastAPI`` plus :meth:`include_extension`."""

    def include_extension(self, extension: Extension) -> None:
        """Plug ``extension`` into this app (calls ``extension.install(self)``)."""
        if not isinstance(extension, Extension):
            raise ConfigurationError(f"{extension!r} is not an extension: it has no install(app)")
        extension.install(self)


class BusExtension:
    """Runs a message bus with a FastAPI app.

    ```python
    app = FastAPI()
    app.include_extension(BusExtension(url="memory://", routers=[events], service="shop"))
    ```

    On install it wraps the app's lifespan (keeping yours) and adds the publisher middleware.
    At startup it connects and declares the topology before your startup code runs, and starts
    the consumers after it; at shutdown it lets in-flight handlers finish before your shutdown
    code runs, and disconnects after it.

    Args:
        url: the broker: ``memory://`` (embedded, the default) or ``amqp://user:pass@host/vhost``.
        service: this service's name; handler queues are ``{service}.{handler}``.
        routers: the event routers whose handlers this service runs.
        transport: a ready transport instead of ``url`` (to pass transport options).
        dependencies: ``Depends(...)`` run before every handler.
        middleware: consumer middleware, ``Middleware(cls, **options)``, first is outermost.
        consume: run the handlers in this process (``False``: publish only, e.g. a web
            process whose handlers run in workers; ``"broadcast"``: run only the
            ``broadcast=True`` handlers, e.g. a web process that pushes events to its
            WebSockets). Default: the ``FASTAPI_BUS_CONSUME`` environment variable (``true``
            when unset), read here.
        prefetch: default for handlers: messages fetched and not yet acknowledged.
        concurrency: default for handlers: calls at once (default: ``prefetch``).
        shutdown_grace: seconds in-flight handlers get to finish at shutdown.
        retry: the default :class:`RetryPolicy` (routers and handlers may set their own).
        metrics: hooks told of every outcome (default: in-memory counters,
            ``ext.bus.metrics.counts``); ``PrometheusMetrics()`` for Prometheus.
        metrics_url: serve the metrics here for a scraper (``"/metrics"``); needs metrics
            that can be scraped, such as ``PrometheusMetrics()``. Default: off.
        tracing: ``True`` (or a :class:`~fastapi_bus.telemetry.Tracing`) traces publishing
            and handling with OpenTelemetry (the ``otel`` extra). Default: off.
        idempotency_store: where ``idempotent=True`` handlers remember processed messages
            (default: process memory).
        publish_faults: publish a :class:`Fault` event for each dead-lettered message
            (default: only if a handler of this service subscribes to ``Fault``).
        outbox: a transactional outbox (``fastapi_bus.outbox.SQLAlchemyOutbox``) for
            ``publish(..., session=...)``; its relay runs while the bus does.
        handler_timeout: default for handlers: seconds a call may run before it is cancelled
            and counts as a failure (:class:`HandlerTimeout`: retried, then dead-lettered).
            Default: none on ``memory://``; on RabbitMQ, the longest that keeps every delivery
            within the broker's consumer timeout (see the reliability guide).
        max_message_size: the largest encoded event body, in bytes (default 1 MiB; ``None``:
            no limit). A bigger event is refused on publish (:class:`MessageTooLarge`, nothing
            sent), and a bigger message arriving from elsewhere is dead-lettered unread.
        admin_url: serve dead-letter admin routes under this path (default: off).
        admin_dependencies: ``Depends(...)`` guarding the admin routes; required with
            ``admin_url``.
        docs_url: serve the events page (the AsyncAPI document as HTML) here; ``None``: off.
        asyncapi_url: serve the AsyncAPI document as JSON here, and as YAML at the same path
            ending in ``.yaml``; ``None``: off.
        docs_dependencies: ``Depends(...)`` guarding the page and the documents.
        asyncapi_js_url, asyncapi_css_url: where the page loads the AsyncAPI React component's
            standalone bundle and stylesheet from (default: the jsDelivr CDN).
    """

    def __init__(
        self,
        url: str = "memory://",
        *,
        service: str,
        transport: Transport | None = None,
        admin_url: str | None = None,
        admin_dependencies: Sequence[params.Depends] = (),
        docs_url: str | None = "/events/docs",
        asyncapi_url: str | None = "/events/asyncapi.json",
        docs_dependencies: Sequence[params.Depends] = (),
        asyncapi_js_url: str = DEFAULT_JS_URL,
        asyncapi_css_url: str = DEFAULT_CSS_URL,
        metrics_url: str | None = None,
        **options: Unpack[BusOptions],
    ) -> None:
        if admin_url is not None and not admin_dependencies:
            raise ConfigurationError(
                "admin_url needs admin_dependencies: the admin routes can replay and delete "
                "messages, so protect them, e.g. admin_dependencies=[Depends(require_admin)]"
            )
        self.admin_url = admin_url
        self.admin_dependencies = list(admin_dependencies)
        self.docs_url = docs_url
        self.asyncapi_url = asyncapi_url
        self.docs_dependencies = list(docs_dependencies)
        self.asyncapi_js_url = asyncapi_js_url
        self.asyncapi_css_url = asyncapi_css_url
        self.bus = EventBus(transport or transport_from_url(url), service=service, **options)
        self.metrics_url = metrics_url
        self._exposition = (
            scrapable(self.bus.metrics, metrics_url) if metrics_url is not None else None
        )
        self.app: fastapi.FastAPI | None = None

    def __repr__(self) -> str:
        return f"BusExtension({self.bus!r})"

    def include_router(self, router: EventRouter) -> None:
        """Add a router after construction (before the app starts)."""
        self.bus.include_router(router)

    def install(self, app: fastapi.FastAPI) -> None:
        """Plug the bus into ``app``. Works on a plain ``fastapi.FastAPI`` too."""
        if self.app is not None:
            raise ConfigurationError("this BusExtension is already installed on an app")
        if getattr(app.state, STATE_KEY, None) is not None:
            raise ConfigurationError("this app already has a fastapi-bus installed")
        if app.middleware_stack is not None:
            raise ConfigurationError("install the bus before the app starts")
        bus = self.bus
        bus.app = app
        setattr(app.state, STATE_KEY, bus)
        app.add_middleware(PublisherMiddleware, bus=bus)
        if self.admin_url is not None:
            from fastapi_bus.admin import install_admin_routes

            install_admin_routes(
                app, bus, prefix=self.admin_url, dependencies=self.admin_dependencies
            )
        install_asyncapi_routes(
            app,
            bus,
            asyncapi_url=self.asyncapi_url,
            docs_url=self.docs_url,
            dependencies=self.docs_dependencies,
            js_url=self.asyncapi_js_url,
            css_url=self.asyncapi_css_url,
        )
        if self.metrics_url is not None and self._exposition is not None:
            install_metrics_route(app, self._exposition, self.metrics_url)
        user_lifespan = app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(inner_app: Any) -> AsyncIterator[Any]:
            with server_logging():
                await bus.start()
                try:
                    async with user_lifespan(inner_app) as state:
                        await bus.start_consuming()
                        try:
                            yield state
                        finally:
                            # Handlers finish while the resources of the user's lifespan are up.
                            await bus.stop_consuming()
                finally:
                    await bus.close()

        app.router.lifespan_context = lifespan
        self.app = app


def get_bus(app: fastapi.FastAPI) -> EventBus:
    """The bus installed on ``app``."""
    bus = getattr(app.state, STATE_KEY, None)
    if not isinstance(bus, EventBus):
        raise ConfigurationError("no fastapi-bus is installed on this app")
    return bus
