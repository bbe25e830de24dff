"""Dependency injection for event handlers, with FastAPI's ``Depends`` semantics.

The resolver reads only FastAPI's public markers (``fastapi.params.Depends``: ``.dependency``,
``.use_cache``) and supports what routes support: sync, async and generator dependencies (cleanup
after the handler, also when it raises, in reverse order), sub-dependencies, per-message caching,
``use_cache=False``, classes as dependencies, ``Annotated`` aliases and
``app.dependency_overrides``.

A handler has no HTTP request, so parameters that only make sense in one (``Query``, ``Header``,
``Body``, ``Request``...) are refused when the handler is registered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Annotated, Any, get_args, get_origin

import anyio.to_thread
from fastapi import params
from pydantic import BaseModel
from starlette.background import BackgroundTasks
from starlette.requests import HTTPConnection
from starlette.responses import Response

from fastapi_bus.exceptions import ConfigurationError
from fastapi_bus.messages import Message
from fastapi_bus.types import AnyCallable

__all__ = ["Dependant", "HandlerPlan", "ParamKind", "SolveContext", "analyze_handler", "solve"]

_HTTP_ONLY_TYPES: tuple[type, ...] = (HTTPConnection, Response, BackgroundTasks)


class ParamKind(enum.Enum):
    DEPENDENCY = "dependency"
    MESSAGE = "message"
    EVENT = "event"
    DEFAULT = "default"


@dataclasses.dataclass
class Param:
    name: str
    kind: ParamKind
    annotation: Any = None
    depends: params.Depends | None = None
    default: Any = None


@dataclasses.dataclass
class Dependant:
    """A callable and how to fill each of its parameters."""

    call: AnyCallable
    params: list[Param]
    #: The callable's name for error messages ("handler 'x'", "dependency 'get_db' of ...").
    label: str

    @functools.cached_property
    def kind(self) -> str:
        call = self.call
        if inspect.isasyncgenfunction(call) or inspect.isasyncgenfunction(
            getattr(call, "__call__", None)  # noqa: B004 - callable instances
        ):
            return "asyncgen"
        if inspect.isgeneratorfunction(call) or inspect.isgeneratorfunction(
            getattr(call, "__call__", None)  # noqa: B004
        ):
            return "gen"
        if inspect.isclass(call):
            return "sync"
        if inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
            getattr(call, "__call__", None)  # noqa: B004
        ):
            return "async"
        return "sync"


@dataclasses.dataclass
class HandlerPlan:
    """Everything the dispatcher needs to call one handler."""

    dependant: Dependant
    #: Dependencies that run before the handler for their side effects (router-level etc.).
    extra: list[Param]
    #: The parameter that receives the event, if the handler has one.
    event_param: Param | None


def _unwrap_annotated(annotation: Any) -> tuple[Any, list[Any]]:
    if get_origin(annotation) is Annotated:
        inner, *metadata = get_args(annotation)
        return inner, metadata
    return annotation, []


def _http_only(owner: str, name: str, what: str) -> ConfigurationError:
    return ConfigurationError(
        f"{owner}: parameter {name!r} is {what}, which exists only in HTTP requests. Event "
        "handlers and their dependencies receive events, not requests: take what you need "
        "from the event, from `Message` (ids and headers) or from another dependency."
    )


def _type_hints(call: AnyCallable) -> dict[str, Any]:
    target: Any = call.__init__ if inspect.isclass(call) else call
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        target = getattr(call, "__call__", call)  # noqa: B004 - callable instances
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to the raw annotations
        return dict(getattr(target, "__annotations__", {}))


def _describe(call: AnyCallable) -> str:
    return getattr(call, "__qualname__", None) or getattr(call, "__name__", None) or repr(call)


def _classify(
    name: str, parameter: inspect.Parameter, hint: Any, owner: str, *, handler: bool
) -> Param:
    inner, metadata = _unwrap_annotated(hint)
    depends: params.Depends | None = None
    for item in metadata:
        if isinstance(item, params.Depends):
            depends = item
        elif isinstance(item, (params.Param, params.Body)):
            return _fail_http(owner, name, item)
    default = parameter.default
    if isinstance(default, params.Depends):
        depends = default
    elif isinstance(default, (params.Param, params.Body)):
        return _fail_http(owner, name, default)
    if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
        raise ConfigurationError(f"{owner}: parameter {name!r}: *args and **kwargs are not supported")
    if depends is not None:
        if depends.dependency is None and inner is inspect.Parameter.empty:
            raise ConfigurationError(
                f"{owner}: parameter {name!r} uses Depends() without a callable and without a "
                "type annotation to call instead"
            )
        return Param(name, ParamKind.DEPENDENCY, annotation=inner, depends=depends)
    if inspect.isclass(inner):
        if issubclass(inner, Message):
            return Param(name, ParamKind.MESSAGE, annotation=inner)
        if issubclass(inner, _HTTP_ONLY_TYPES):
            raise _http_only(owner, name, f"a {inner.__name__}")
        if inner.__name__ == "SecurityScopes":
            raise _http_only(owner, name, "SecurityScopes")
    if handler:
        # Keep Annotated metadata (a discriminator, say): it is part of how the event validates.
        return Param(name, ParamKind.EVENT, annotation=hint)
    if parameter.default is not inspect.Parameter.empty:
        return Param(name, ParamKind.DEFAULT, annotation=inner, default=parameter.default)
    raise ConfigurationError(
        f"{owner}: parameter {name!r} has no value in an event handler. In a route it would be a "
        "query parameter; here, give it a default, make it a Depends(...), or annotate it as "
        "Message."
    )


def _fail_http(owner: str, name: str, marker: object) -> Param:
    raise _http_only(owner, name, f"{type(marker).__name__}(...)")


_analysis_cache: dict[Any, Dependant] = {}


def analyze(call: AnyCallable, *, owner: str) -> Dependant:
    """Read the signature of a dependency and of its sub-dependencies, recursively."""
    try:
        cached = _analysis_cache.get(call)
    except TypeError:  # unhashable callable
        cached = None
    if cached is not None:
        return cached
    label = f"{owner} -> dependency {_describe(call)!r}"
    dependant = _analyze(call, label=label, handler=False)
    with contextlib.suppress(TypeError):
        _analysis_cache[call] = dependant
    return dependant


def _analyze(call: AnyCallable, *, label: str, handler: bool) -> Dependant:
    try:
        signature = inspect.signature(call)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{label}: cannot read its signature ({exc})") from None
    hints = _type_hints(call)
    found: list[Param] = []
    for name, parameter in signature.parameters.items():
        hint = hints.get(name, parameter.annotation)
        param = _classify(name, parameter, hint, label, handler=handler)
        if param.kind is ParamKind.DEPENDENCY:
            assert param.depends is not None
            sub_call = param.depends.dependency or param.annotation
            if not _is_publisher_provider(sub_call):
                analyze(sub_call, owner=label)  # validate the whole tree now
        found.append(param)
    return Dependant(call=call, params=found, label=label)


def _is_publisher_provider(call: Any) -> bool:
    from fastapi_bus.publisher import get_publisher

    return call is get_publisher


def analyze_handler(
    func: AnyCallable,
    *,
    label: str,
    dependencies: Sequence[params.Depends] = (),
) -> HandlerPlan:
    """Analyse a handler: its event parameter, its dependencies, and the extra ``dependencies``
    of its router(s) and extension. Raises :class:`ConfigurationError` naming the handler and
    the parameter at fault."""
    dependant = _analyze(func, label=label, handler=True)
    events = [p for p in dependant.params if p.kind is ParamKind.EVENT]
    if len(events) > 1:
        names = ", ".join(repr(p.name) for p in events)
        raise ConfigurationError(
            f"{label}: parameters {names} all look like the event; a handler takes one event "
            "parameter, and the others must be Depends(...) or Message"
        )
    extra: list[Param] = []
    for index, depends in enumerate(dependencies):
        if not isinstance(depends, params.Depends) or depends.dependency is None:
            raise ConfigurationError(
                f"{label}: dependencies[{index}] must be Depends(callable), got {depends!r}"
            )
        if not _is_publisher_provider(depends.dependency):
            analyze(depends.dependency, owner=label)
        extra.append(Param(f"dependencies[{index}]", ParamKind.DEPENDENCY, depends=depends))
    return HandlerPlan(dependant=dependant, extra=extra, event_param=events[0] if events else None)


@dataclasses.dataclass
class SolveContext:
    """What one delivery provides to the dependencies of its handler."""

    message: Message
    publisher: Any
    overrides: Mapping[AnyCallable, AnyCallable]
    stack: AsyncExitStack
    cache: dict[AnyCallable, Any] = dataclasses.field(default_factory=dict)


async def solve(plan: HandlerPlan, event: Any, ctx: SolveContext) -> Any:
    """Resolve the handler's dependencies for one message and call it."""
    for param in plan.extra:
        await _resolve_param(param, ctx)
    kwargs = await _arguments(plan.dependant, ctx, event=event)
    return await _call(plan.dependant, kwargs, ctx, is_handler=True)


async def _arguments(dependant: Dependant, ctx: SolveContext, event: Any = None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for param in dependant.params:
        if param.kind is ParamKind.EVENT:
            values[param.name] = event
        elif param.kind is ParamKind.MESSAGE:
            values[param.name] = ctx.message
        elif param.kind is ParamKind.DEFAULT:
            values[param.name] = param.default
        else:
            values[param.name] = await _resolve_param(param, ctx)
    return values


async def _resolve_param(param: Param, ctx: SolveContext) -> Any:
    assert param.depends is not None
    original = param.depends.dependency or param.annotation
    call = ctx.overrides.get(original, original)
    if call is original and _is_publisher_provider(call):
        return ctx.publisher
    use_cache = param.depends.use_cache
    if use_cache and call in ctx.cache:
        return ctx.cache[call]
    dependant = analyze(call, owner="event handler")
    kwargs = await _arguments(dependant, ctx)
    value = await _call(dependant, kwargs, ctx, is_handler=False)
    if use_cache:
        ctx.cache[call] = value
    return value


async def _call(
    dependant: Dependant, kwargs: dict[str, Any], ctx: SolveContext, *, is_handler: bool
) -> Any:
    call = dependant.call
    kind = dependant.kind
    if kind == "async":
        return await call(**kwargs)
    if kind == "asyncgen" and not is_handler:
        return await ctx.stack.enter_async_context(contextlib.asynccontextmanager(call)(**kwargs))
    if kind == "gen" and not is_handler:
        manager = contextlib.contextmanager(call)(**kwargs)
        value = await anyio.to_thread.run_sync(manager.__enter__)
        ctx.stack.push_async_exit(_threaded_exit(manager))
        return value
    if kind in ("asyncgen", "gen"):
        raise ConfigurationError(f"{dependant.label}: a handler cannot be a generator")
    return await anyio.to_thread.run_sync(functools.partial(call, **kwargs))


def _threaded_exit(manager: contextlib.AbstractContextManager[Any]) -> Callable[..., Any]:
    async def exit_(*exc_info: Any) -> bool | None:
        return await anyio.to_thread.run_sync(manager.__exit__, *exc_info)

    return exit_


def event_type_of(plan: HandlerPlan) -> Any:
    """The annotation of the handler's event parameter, or ``None``."""
    if plan.event_param is None:
        return None
    annotation = plan.event_param.annotation
    return None if annotation is inspect.Parameter.empty else annotation


def is_model(tp: Any) -> bool:
    return inspect.isclass(tp) and issubclass(tp, BaseModel)
