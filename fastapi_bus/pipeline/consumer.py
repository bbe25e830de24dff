"""A handler's consumer: what its transport calls with each message, composed once at startup.

The steps, outermost first: the metrics hooks and the log context of the delivery, the failure
step (retries, redelivery, dead letters), idempotency, the timeout, the user middleware, and
the :class:`~.handler.HandlerCall`. Only the steps that have something to do are there: no
timeout step without a timeout, no idempotency step unless the handler asks for it, no hook call
for a hook nobody overrides. A handler with none of them gets the message straight into its
call (which then binds the log context itself: one coroutine per message), with the retry
machinery (and the :class:`~.delivery.Delivery` it works on) brought in only when the call
raises.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi_bus.core.logs import bind_delivery, readers, unbind_delivery
from fastapi_bus.core.messages import Message
from fastapi_bus.core.metrics import Metrics, listener
from fastapi_bus.pipeline.delivery import ConsumeApp, Delivery
from fastapi_bus.pipeline.failures import FailureMiddleware
from fastapi_bus.pipeline.handler import HandlerCall
from fastapi_bus.transports.base import Consumer

__all__ = ["handler_consumer"]


def handler_consumer(
    call: HandlerCall,
    pipeline: ConsumeApp,
    failures: FailureMiddleware,
    *,
    queue: str,
    metrics: Metrics,
) -> Consumer:
    """The consumer of one handler's queue.

    ``pipeline`` is what the failure step wraps (the call itself, or the steps around it);
    ``failures`` is that step, whose :meth:`~FailureMiddleware.recover` takes over when the
    first call raises.
    """
    route = call.route
    handler = route.name
    consumed = listener(metrics, "consumed")
    settled = listener(metrics, "settled")
    recover = failures.recover
    handle: Callable[[Message], Awaitable[None]]
    if pipeline is call and consumed is None and settled is None:
        return call.consumer(recover, queue)
    if pipeline is call:
        handle = call.handle
    else:

        def handle(message: Message) -> Awaitable[None]:
            return pipeline(Delivery(message=message, route=route, queue=queue))

    async def consume(message: Message) -> None:
        if consumed is not None:
            consumed(handler, message.name)
        # In the log context of the delivery, once something reads it (see ``readers``).
        token = bind_delivery(message, handler) if readers.any else None
        try:
            await handle(message)
        except Exception as exc:
            await recover(Delivery(message=message, route=route, queue=queue), exc)
        finally:
            if token is not None:
                unbind_delivery(token)
            if settled is not None:
                settled(handler, message.name)

    return consume
