"""fastapi-bus: a message bus for FastAPI.

The FastAPI glue (:class:`FastAPI`, :class:`BusExtension`, :data:`Bus`, :func:`get_bus`...) is
imported when first used, so that a worker built on :class:`EventBus` alone, whose handlers use
no FastAPI feature, never imports FastAPI (about 7 MiB of memory less per process).
"""

import importlib
import logging
import typing

from fastapi_bus.core.exceptions import (
    BusError,
    ConfigurationError,
    EventValidationError,
    HandlerSignal,
    HandlerTimeout,
    MessageTooLarge,
    PublishError,
    Reject,
    Retry,
    TransportClosedError,
    TransportError,
    UnknownEventError,
    UnroutableError,
)
from fastapi_bus.core.faults import Fault
from fastapi_bus.core.logs import MessageLogFilter
from fastapi_bus.core.messages import Message
from fastapi_bus.core.metrics import CounterMetrics, Metrics, MetricsGroup
from fastapi_bus.pipeline.delivery import ConsumeApp, Delivery
from fastapi_bus.pipeline.idempotency import IdempotencyStore, MemoryIdempotencyStore
from fastapi_bus.pipeline.middleware import Middleware
from fastapi_bus.pipeline.policy import RetryPolicy
from fastapi_bus.routing.route import EventRoute
from fastapi_bus.routing.router import EventRouter
from fastapi_bus.runtime.bus import BusState, EventBus
from fastapi_bus.runtime.deadletters import DeadLetter, DeadLetterQueue
from fastapi_bus.runtime.publishing import Publisher
from fastapi_bus.telemetry import Tracing
from fastapi_bus.transports import MemoryTransport, Transport

if typing.TYPE_CHECKING:
    from fastapi_bus.web.extension import BusExtension, Extension, FastAPI, get_bus
    from fastapi_bus.web.publisher import Bus

#: The exports that need FastAPI, and their modules: imported on first use (PEP 562).
_LAZY = {
    "Bus": "fastapi_bus.web.publisher",
    "BusExtension": "fastapi_bus.web.extension",
    "Extension": "fastapi_bus.web.extension",
    "FastAPI": "fastapi_bus.web.extension",
    "get_bus": "fastapi_bus.web.extension",
}

__version__ = "0.1.0"

# A library leaves logging to the application: without any logging configuration, the bus's
# records go nowhere instead of to stderr unformatted (Python's "last resort" handler). The
# worker command configures logging, and under uvicorn the bus borrows uvicorn's handlers while
# the app runs (fastapi_bus.web.logs).
logging.getLogger("fastapi_bus").addHandler(logging.NullHandler())

__all__ = [
    "Bus",
    "BusError",
    "BusExtension",
    "BusState",
    "ConfigurationError",
    "ConsumeApp",
    "CounterMetrics",
    "DeadLetter",
    "DeadLetterQueue",
    "Delivery",
    "EventBus",
    "EventRoute",
    "EventRouter",
    "EventValidationError",
    "Extension",
    "FastAPI",
    "Fault",
    "HandlerSignal",
    "HandlerTimeout",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "MemoryTransport",
    "Message",
    "MessageLogFilter",
    "MessageTooLarge",
    "Metrics",
    "MetricsGroup",
    "Middleware",
    "PublishError",
    "Publisher",
    "Reject",
    "Retry",
    "RetryPolicy",
    "Tracing",
    "Transport",
    "TransportClosedError",
    "TransportError",
    "UnknownEventError",
    "UnroutableError",
    "__version__",
    "get_bus",
]


def __getattr__(name: str) -> typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
