"""Where the bus reports to its metrics hooks and its tracer, on publish and on consume.

Built once per bus; when tracing is off, no tracing code runs for any message. On consume, a
handler's consumer (``fastapi_bus.pipeline.consumer``) calls the hooks itself; this adds the
tracer's span around it.
"""

from __future__ import annotations

import time

from fastapi_bus.core.messages import Message
from fastapi_bus.core.metrics import Metrics, MetricsGroup
from fastapi_bus.telemetry.tracer import Consume, MessageTracer, Send

__all__ = ["Observer"]


class Observer:
    """The metrics hooks and the (optional) tracer of one bus."""

    def __init__(self, metrics: Metrics, tracer: MessageTracer | None) -> None:
        self.metrics = metrics
        self.tracer = tracer
        #: What the pipeline reports to: the metrics, and the tracer's hooks when tracing.
        self.hooks: Metrics = metrics if tracer is None else MetricsGroup(metrics, tracer)
        #: Whether :meth:`send` does anything besides sending: a publish span, or a
        #: ``published`` hook to time the send for (the default hooks do nothing with it).
        self.observes_sends = tracer is not None or _overrides(metrics, "published")

    def encoded(self, message: Message) -> Message:
        """A message just encoded, in its publisher's context."""
        return message if self.tracer is None else self.tracer.stamp(message)

    async def send(self, message: Message, delay: float | None, send: Send) -> None:
        """Send ``message`` (in a publish span when tracing), timing it for the hooks."""
        start = time.perf_counter()
        if self.tracer is None:
            await send(message, delay=delay)
        else:
            await self.tracer.send(message, delay, send)
        self.metrics.published(message.name, time.perf_counter() - start)

    def consumer(self, consume: Consume, handler: str, queue: str) -> Consume:
        """``consume`` (one handler's consumer, which reports to the metrics hooks itself), in
        a process span when tracing; ``consume`` itself otherwise."""
        tracer = self.tracer
        if tracer is None:
            return consume

        async def traced(message: Message) -> None:
            await tracer.process(message, handler, queue, consume)

        return traced


def _overrides(metrics: Metrics, hook: str) -> bool:
    """Whether ``metrics`` does something in ``hook`` (it is not :class:`Metrics`' own)."""
    if hook in vars(metrics):
        return True
    return getattr(type(metrics), hook) is not getattr(Metrics, hook)
