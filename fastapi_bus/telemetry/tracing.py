"""Switching tracing on, and what the bus asks of a tracer.

The bus never imports OpenTelemetry: it holds a :class:`MessageTracer` (made by
:class:`Tracing` when tracing is on, ``None`` otherwise), so a bus without tracing does no
tracing work at all, not even a check per message beyond ``is None``.
"""

from __future__ import annotations

from typing import Any

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.telemetry.tracer import MessageTracer

__all__ = ["MessageTracer", "Tracing", "make_tracer"]

#: ``messaging.system`` for a transport's protocol, where the two differ.
_SYSTEMS = {"amqp": "rabbitmq"}


class Tracing:
    """OpenTelemetry tracing of a bus: ``BusExtension(..., tracing=True)``, or
    ``tracing=Tracing(tracer_provider=provider)`` to use a provider other than the global one.

    Needs the ``otel`` extra (``pip install 'fastapi-bus[otel]'``: the OpenTelemetry API only;
    an SDK and an exporter are yours to choose). Without an SDK configured, the spans are the
    API's no-op spans.
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        self.tracer_provider = tracer_provider

    def __repr__(self) -> str:
        return f"Tracing(tracer_provider={self.tracer_provider!r})"

    def tracer(self, protocol: str) -> MessageTracer:
        """The tracer of a bus whose transport speaks ``protocol`` (``memory``, ``amqp``...)."""
        try:
            from fastapi_bus.telemetry.otel import OpenTelemetryTracer
        except ImportError as exc:
            if not (exc.name or "").startswith("opentelemetry"):
                raise
            raise ConfigurationError(
                "tracing needs the OpenTelemetry API: pip install 'fastapi-bus[otel]'"
            ) from exc
        system = _SYSTEMS.get(protocol, protocol)
        return OpenTelemetryTracer(self.tracer_provider, system=system)


def make_tracer(tracing: bool | Tracing | None, protocol: str) -> MessageTracer | None:
    """The tracer for a bus's ``tracing`` option; ``None`` when it is off."""
    if tracing is None or tracing is False:
        return None
    if tracing is True:
        tracing = Tracing()
    if not isinstance(tracing, Tracing):
        raise ConfigurationError(f"tracing must be True, False or a Tracing(...), got {tracing!r}")
    return tracing.tracer(protocol)
