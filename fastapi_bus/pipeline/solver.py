"""Solving a handler's dependencies for one message, in the order FastAPI solves a route's.

See :mod:`fastapi_bus.pipeline.dependencies` for how handlers are analysed and what is supported.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.core.messages import Message
from fastapi_bus.core.types import AnyCallable
from fastapi_bus.pipeline.dependencies import (
    Dependant,
    HandlerPlan,
    Param,
    ParamKind,
    analyze,
    dependency_of,
    describe,
)
from fastapi_bus.pipeline.provided import is_publisher_provider
from fastapi_bus.pipeline.work import UnitOfWork

if TYPE_CHECKING:
    from fastapi import params

__all__ = ["SolveContext", "solve"]

logger = logging.getLogger("fastapi_bus.pipeline.dependencies")


class SolveContext:
    """What one delivery provides to the dependencies of its handler, and their solving.

    ``solve`` runs the exits of the dependencies with ``yield`` itself, before it returns (so
    that it can tell when one of them swallowed the handler's exception).
    """

    __slots__ = (
        "cache",
        "claim",
        "function_stack",
        "message",
        "overrides",
        "request_stack",
        "work",
    )

    def __init__(
        self,
        message: Message,
        work: list[Any],
        claim: Callable[[list[Any]], UnitOfWork],
        overrides: Mapping[AnyCallable, AnyCallable],
    ) -> None:
        self.message = message
        #: Its work cell; ``claim(work).publisher`` is what a ``bus: Bus`` parameter receives
        #: (see :mod:`~fastapi_bus.pipeline.work`).
        self.work = work
        self.claim = claim
        self.overrides = overrides
        #: Values of the dependencies already called for this message.
        self.cache: dict[Any, Any] = {}
        #: Where the exits of dependencies with ``yield`` go (``None``: the graph has none).
        self.request_stack: AsyncExitStack | None = None
        self.function_stack: AsyncExitStack | None = None

    async def call(self, plan: HandlerPlan, event: Any) -> Any:
        for param in plan.extra:
            await self.resolve(param)
        dependant = plan.dependant
        kwargs = await self.arguments(dependant, event)
        if dependant.kind == "async":
            return await dependant.call(**kwargs)
        return await self.call_handler(dependant, kwargs)

    async def arguments(self, dependant: Dependant, event: Any = None) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for param in dependant.params:
            kind = param.kind
            if kind is ParamKind.EVENT:
                values[param.name] = event
            elif kind is ParamKind.MESSAGE:
                values[param.name] = self.message
            elif kind is ParamKind.DEFAULT:
                values[param.name] = param.default
            else:
                values[param.name] = await self.resolve(param)
        return values

    def _override(self, original: Any) -> Any:
        overrides = self.overrides
        if not overrides:
            return original
        try:
            return overrides.get(original, original)
        except TypeError:  # unhashable: cannot be a key of the overrides
            return original

    async def resolve(self, param: Param) -> Any:
        depends = param.depends
        assert depends is not None
        original = dependency_of(param)
        call = self._override(original)
        if is_publisher_provider(call):
            return self.claim(self.work).publisher
        if call is original and param.dependant is not None:
            dependant = param.dependant
        else:  # an override, read (and checked) when first used
            dependant = analyze(call, owner=f"override of {describe(original)!r}")
        # As FastAPI does: sub-dependencies first, then the cache.
        kwargs = await self.arguments(dependant) if dependant.params else {}
        key = param.cache_key
        cache = self.cache
        if key is not None and depends.use_cache and key in cache:
            return cache[key]
        if dependant.kind == "async":
            value = await dependant.call(**kwargs)
        else:
            value = await self._call_dependency(dependant, kwargs, depends)
        if key is not None and key not in cache:
            cache[key] = value
        return value

    async def _call_dependency(
        self, dependant: Dependant, kwargs: dict[str, Any], depends: params.Depends
    ) -> Any:
        call = dependant.call
        kind = dependant.kind
        if kind in ("gen", "asyncgen"):
            scope = getattr(depends, "scope", None)
            stack = self.function_stack if scope == "function" else self.request_stack
            assert stack is not None, "a dependency with yield, not seen when the plan was made"
            if kind == "asyncgen":
                return await stack.enter_async_context(dependant.context_manager(**kwargs))
            sync_manager = dependant.context_manager(**kwargs)
            value = await anyio.to_thread.run_sync(sync_manager.__enter__)
            stack.push_async_exit(_threaded_exit(sync_manager))
            return value
        if kind == "async":
            return await call(**kwargs)
        return await anyio.to_thread.run_sync(functools.partial(call, **kwargs))

    @staticmethod
    async def call_handler(dependant: Dependant, kwargs: dict[str, Any]) -> Any:
        kind = dependant.kind
        if kind in ("asyncgen", "gen"):
            raise ConfigurationError(f"{dependant.label}: a handler cannot be a generator")
        if kind == "async":
            return await dependant.call(**kwargs)
        # A sync handler runs in a worker thread, as a sync route does. A thread cannot be
        # interrupted: when the call is cancelled (timeout, shutdown) it is left to finish alone.
        return await anyio.to_thread.run_sync(
            functools.partial(dependant.call, **kwargs), abandon_on_cancel=True
        )


def event_call(plan: HandlerPlan) -> Callable[[Any], Awaitable[Any]] | None:
    """The handler itself, for an ``async`` handler that takes only its event, by position:
    called as ``handler(event)``, with nothing in between. ``None`` for any other handler."""
    dependant = plan.dependant
    if plan.extra or dependant.kind != "async" or len(dependant.params) != 1:
        return None
    (param,) = dependant.params
    if param.kind is not ParamKind.EVENT or not _only_positional_parameter(
        dependant.call, param.name
    ):
        return None
    call: Callable[[Any], Awaitable[Any]] = dependant.call
    return call


def direct_call(plan: HandlerPlan) -> Callable[[Any, Message], Awaitable[Any]] | None:
    """For an ``async`` handler without dependencies (only the event, the ``Message`` and
    defaults), a call that skips the solver: nothing to resolve, cache or exit. It returns the
    handler's awaitable, to be awaited by the caller (no coroutine of its own in between).
    ``None`` for any other handler."""
    dependant = plan.dependant
    if plan.extra or dependant.kind != "async":
        return None
    if any(param.kind is ParamKind.DEPENDENCY for param in dependant.params):
        return None
    call = dependant.call
    # The arguments are worked out once: only the event and the message change per call.
    defaults = {
        param.name: param.default for param in dependant.params if param.kind is ParamKind.DEFAULT
    }
    events = [param.name for param in dependant.params if param.kind is ParamKind.EVENT]
    messages = [param.name for param in dependant.params if param.kind is ParamKind.MESSAGE]
    if not defaults and not messages and len(events) == 1:
        (event_name,) = events
        if _only_positional_parameter(call, event_name):
            # ``handler(event)``: a call with keywords builds a dict at every message.

            def event_positional(event: Any, message: Message) -> Awaitable[Any]:
                return call(event)  # type: ignore[no-any-return]

            return event_positional

        def event_only(event: Any, message: Message) -> Awaitable[Any]:
            return call(**{event_name: event})  # type: ignore[no-any-return]

        return event_only

    def direct(event: Any, message: Message) -> Awaitable[Any]:
        kwargs = dict(defaults)
        for name in events:
            kwargs[name] = event
        for name in messages:
            kwargs[name] = message
        return call(**kwargs)  # type: ignore[no-any-return]

    return direct


def _only_positional_parameter(call: Any, name: str) -> bool:
    """Whether ``name`` is the one parameter of ``call``, and it can be passed by position."""
    try:
        parameters = list(inspect.signature(call).parameters.values())
    except (TypeError, ValueError):
        return False
    return (
        len(parameters) == 1
        and parameters[0].name == name
        and parameters[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    )


async def solve(plan: HandlerPlan, event: Any, ctx: SolveContext) -> Any:
    """Resolve the handler's dependencies for one message and call it.

    The exits of dependencies with ``yield`` run after the handler, in reverse order, with the
    handler's exception thrown into them if it raised; those declared with
    ``Depends(..., scope="function")`` exit before the others, as in FastAPI. A dependency that
    catches that exception and does not raise it again cannot turn the failure into a success:
    the exception propagates all the same (FastAPI answers an error in that case too).
    """
    if not plan.exits and not ctx.overrides:
        # Nothing to exit after the handler: no exit stacks.
        return await ctx.call(plan, event)
    failure: BaseException | None = None
    result: Any = None
    async with AsyncExitStack() as request_stack:
        ctx.request_stack = ctx.function_stack = request_stack
        if plan.function_scoped or ctx.overrides:
            # Exited first, as the innermost.
            async with AsyncExitStack() as function_stack:
                ctx.function_stack = function_stack
                try:
                    result = await ctx.call(plan, event)
                except BaseException as exc:
                    failure = exc
                    raise
        else:
            try:
                result = await ctx.call(plan, event)
            except BaseException as exc:
                failure = exc
                raise
    if failure is not None:
        # Only reached when the exit of a dependency with yield swallowed the exception.
        logger.warning(
            "%s: a dependency with yield caught %s and did not raise it again; the delivery "
            "fails all the same (re-raise in the dependency's except block)",
            plan.dependant.label,
            type(failure).__name__,
        )
        raise failure
    return result


def _threaded_exit(manager: contextlib.AbstractContextManager[Any]) -> Callable[..., Any]:
    async def exit_(*exc_info: Any) -> bool | None:
        return await anyio.to_thread.run_sync(manager.__exit__, *exc_info)

    return exit_
