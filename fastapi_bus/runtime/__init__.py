"""The running bus: :class:`~fastapi_bus.EventBus` wires the declared routes, their pipelines
and the transport together, and owns the lifecycle; publishers and the dead-letter tools work
through it. Nothing below this layer imports it."""
