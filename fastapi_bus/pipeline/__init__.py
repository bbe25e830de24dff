"""The consume pipeline: what happens to one message on its way to one handler.

decode → validate → (user middleware) → solve the dependencies → call the handler, wrapped by
the built-in steps (idempotency, timeouts, retries and dead letters). It knows the vocabulary in
:mod:`fastapi_bus.core` and nothing of routers or of the running bus: what it needs from them
is passed in when a handler's pipeline is built (see :class:`~.handler.HandlerEnv`).
"""
