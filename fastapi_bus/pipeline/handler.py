"""The innermost step of a handler's pipeline, and what it needs from the running bus.

decode → validate → resolve dependencies → call the handler → send what it published.
"""

from __future__ import annotations

import contextvars
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Protocol

from fastapi_bus.core.logs import delivery_context, readers
from fastapi_bus.core.messages import JSON, Message
from fastapi_bus.core.metrics import Metrics, listener, times_handling
from fastapi_bus.core.types import AnyCallable
from fastapi_bus.pipeline.decoding import Decoder, check_size
from fastapi_bus.pipeline.delivery import Delivery, HandlerInfo
from fastapi_bus.pipeline.dependencies import HandlerPlan
from fastapi_bus.pipeline.solver import SolveContext, direct_call, event_call, solve
from fastapi_bus.transports.base import Transport

__all__ = ["HandlerCall", "HandlerEnv", "UnitOfWork"]


class UnitOfWork(Protocol):
    """The events one handler call publishes, held back until it returns.

    Entering binds its publisher to the running context (so that ``bus.publish`` outside
    a ``Bus`` parameter joins it too); leaving unbinds it."""

    @property
    def publisher(self) -> Any:
        """What a ``bus: Bus`` parameter of the handler receives."""

    def __enter__(self) -> object: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def discard(self) -> None:
        """The call failed: drop what it published."""

    def settle(self) -> Awaitable[None] | None:
        """The call succeeded: what sends the events it published, in order (to await), or
        ``None`` when it published none."""


@dataclasses.dataclass(frozen=True)
class HandlerEnv:
    """What a handler's pipeline needs from the running bus, given when it is built."""

    transport: Transport
    metrics: Metrics
    #: The app's ``dependency_overrides``, read at every delivery (tests change them).
    overrides: Callable[[], Mapping[AnyCallable, AnyCallable]]
    #: Opens the unit of work of one message.
    open_work: Callable[[Message], UnitOfWork]
    #: What entering a unit of work sets to it (and leaving resets): the pipeline sets it
    #: itself around the handler's call, as the work's ``__enter__`` and ``__exit__`` would.
    work_context: contextvars.ContextVar[Any]
    #: Called with the dead letter (its failure headers added) and the reason, after it was
    #: kept in the dead-letter queue (the bus publishes a ``Fault`` event from it).
    on_dead_letter: Callable[[Delivery, Message, str], Awaitable[None]]
    #: Bodies larger than this many bytes are dead-lettered unread (``None``: no limit).
    max_message_size: int | None = None


class HandlerCall:
    """Decode and validate the body, solve the dependencies, call the handler, then send the
    events it published."""

    def __init__(
        self, route: HandlerInfo, plan: HandlerPlan, event_type: Any, env: HandlerEnv
    ) -> None:
        self.route = route
        self.plan = plan
        self.env = env
        self.decode = Decoder(event_type, route.label)
        self.wants_event = plan.event_param is not None or event_type is not None
        #: Handlers without dependencies skip the solver (``None``: solve).
        self.direct = direct_call(plan)
        #: The handler itself when it takes only the event, by position.
        self.by_event = event_call(plan)
        #: The whole call for one message (what ``__call__`` does with a delivery's).
        self.handle: Callable[[Message], Awaitable[None]] = self._compile()

    async def __call__(self, delivery: Delivery) -> None:
        await self.handle(delivery.message)

    def consumer(
        self, recover: Callable[[Delivery, Exception], Awaitable[None]], queue: str
    ) -> Callable[[Message], Awaitable[None]]:
        """The whole consumer of a handler with no other step around its call: the call in
        the log context of the delivery, and ``recover`` (the failure step) when it raises.
        One coroutine per message instead of two."""
        return self._compile(recover, queue)

    def _compile(
        self,
        recover: Callable[[Delivery, Exception], Awaitable[None]] | None = None,
        queue: str = "",
    ) -> Callable[[Message], Awaitable[None]]:
        # What every message needs is looked up once, here: the call reads only local names.
        route = self.route
        env = self.env
        limit = env.max_message_size
        decode = self.decode if self.wants_event else None
        validate_json = self.decode.validate_json
        open_work = env.open_work
        bind_work, unbind_work = env.work_context.set, env.work_context.reset
        handled = listener(env.metrics, "handled")
        #: No clock read around the call when no ``handled`` hook reads the seconds.
        timed = times_handling(env.metrics)
        failed = env.metrics.failed
        handler = self.route.name
        direct = self.direct
        by_event = self.by_event
        plan = self.plan
        overrides = env.overrides
        clock = time.perf_counter
        bind, unbind = delivery_context.set, delivery_context.reset

        async def handle(message: Message) -> None:
            # As a consumer (``recover`` given): in the log context of the delivery, once
            # something reads it (see ``readers``).
            token = bind((message, handler)) if recover is not None and readers.any else None
            try:
                if limit is not None and len(message.body) > limit:
                    check_size(message, limit)  # raises
                event = None
                if decode is not None:
                    # ``decode(message)`` written out for a JSON body that validates (every
                    # message, but one call less); the decoder says what else is wrong.
                    if message.content_type == JSON:
                        try:
                            event = validate_json(message.body)
                        except (ValueError, RecursionError):
                            event = decode(message)  # raises, with the reason
                    else:
                        event = decode(message)
                work = open_work(message)
                start = clock() if timed else 0.0
                # ``with work``, written out: the context variable's own ``set`` and ``reset``
                # (two calls of the work's methods less, for every message).
                bound = bind_work(work)
                try:
                    if by_event is not None:
                        await by_event(event)
                    elif direct is not None:
                        await direct(event, message)
                    else:
                        ctx = SolveContext(message=message, work=work, overrides=overrides())
                        await solve(plan, event, ctx)
                except BaseException as exc:
                    work.discard()
                    if isinstance(exc, Exception):
                        failed(handler, message.name, exc)
                    raise
                finally:
                    unbind_work(bound)
                flush = work.settle()
                if flush is not None:
                    await flush
                if handled is not None:
                    handled(handler, message.name, clock() - start if timed else 0.0)
            except Exception as exc:
                if recover is None:
                    raise
                await recover(Delivery(message=message, route=route, queue=queue), exc)
            finally:
                if token is not None:
                    unbind(token)

        return handle
