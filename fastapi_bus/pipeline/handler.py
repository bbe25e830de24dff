"""The innermost step of a handler's pipeline, and what it needs from the running bus.

decode → validate → resolve dependencies → call the handler → send what it published.
"""

from __future__ import annotations

import contextvars
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi_bus.core.logs import delivery_context, readers
from fastapi_bus.core.messages import JSON, Message
from fastapi_bus.core.metrics import Metrics, listener, times_handling
from fastapi_bus.core.types import AnyCallable
from fastapi_bus.pipeline.decoding import Decoder, check_size
from fastapi_bus.pipeline.delivery import Delivery, HandlerInfo
from fastapi_bus.pipeline.dependencies import HandlerPlan
from fastapi_bus.pipeline.solver import SolveContext, direct_call, event_call, solve
from fastapi_bus.pipeline.work import DISCARDED, SETTLED, UnitOfWork, claimed_work
from fastapi_bus.transports.base import Transport

__all__ = ["HandlerCall", "HandlerEnv"]


@dataclasses.dataclass(frozen=True)
class HandlerEnv:
    """What a handler's pipeline needs from the running bus, given when it is built."""

    transport: Transport
    metrics: Metrics
    #: The app's ``dependency_overrides``, read at every delivery (tests change them).
    overrides: Callable[[], Mapping[AnyCallable, AnyCallable]]
    #: The first item of every work cell (see :mod:`~fastapi_bus.pipeline.work`): the bus
    #: whose handlers these are, so that only its own publishes join a call's unit of work.
    owner: object
    #: The unit of work of a work cell, made by the first call for it (what a ``bus: Bus``
    #: parameter's publisher belongs to).
    claim: Callable[[list[Any]], UnitOfWork]
    #: What the pipeline binds a call's work cell to, around the handler's call.
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
        owner = env.owner
        claim = env.claim
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
                # The call's work cell: its unit of work is made by its first publish.
                work: list[Any] = [owner, message]
                start = clock() if timed else 0.0
                # ``with`` the cell bound, written out: the context variable's own ``set`` and
                # ``reset``.
                bound = bind_work(work)
                try:
                    if by_event is not None:
                        await by_event(event)
                    elif direct is not None:
                        await direct(event, message)
                    else:
                        ctx = SolveContext(message, work, claim, overrides())
                        await solve(plan, event, ctx)
                except BaseException as exc:
                    published = claimed_work(work, DISCARDED)
                    if published is not None:
                        published.discard()
                    if isinstance(exc, Exception):
                        failed(handler, message.name, exc)
                    raise
                finally:
                    unbind_work(bound)
                # ``claimed_work(work, SETTLED)``, written out: for every message.
                work.append(SETTLED)
                published = work[2]
                if published is not SETTLED:
                    await published.flush()
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
