"""Dependency injection for event handlers, with FastAPI's ``Depends`` semantics.

The resolver reads only FastAPI's public markers (``fastapi.params.Depends``: ``.dependency``,
``.use_cache`` and, where FastAPI has it, ``.scope``) and supports what routes support: sync,
async and generator dependencies (cleanup after the handler, also when it raises, in reverse
order), sub-dependencies, per-message caching, ``use_cache=False``, classes and callable
instances as dependencies, ``Annotated`` aliases and ``app.dependency_overrides``.

It follows the order in which FastAPI solves a route's dependencies, so that a graph shared by
routes and handlers runs the same way in both: the sub-dependencies of a dependency are solved
before its cached value is looked up (a ``use_cache=False`` sub-dependency of a cached dependency
runs at every use), the first value computed for a dependency is what later cached uses get
(even when it was computed with ``use_cache=False``), and the cache is keyed by the declared
dependency, not by what overrides it.

A handler has no HTTP request, so parameters that only make sense in one (``Query``, ``Header``,
``Body``, ``Request``...) are refused when the handler is registered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, cast, get_args, get_origin

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.core.messages import Message
from fastapi_bus.core.types import AnyCallable, is_class
from fastapi_bus.pipeline.provided import is_publisher_provider

if TYPE_CHECKING:
    from fastapi import params

__all__ = [
    "Dependant",
    "HandlerPlan",
    "ParamKind",
    "analyze_handler",
    "event_type_of",
    "loaded_classes",
]

logger = logging.getLogger("fastapi_bus.pipeline.dependencies")

#: FastAPI's dependency marker (``Depends(...)``, ``Security(...)``).
_DEPENDS = (("fastapi.params", "Depends"),)
#: Markers of request parameters (``Query``, ``Header``, ``Body``...).
_HTTP_MARKERS = (("fastapi.params", "Param"), ("fastapi.params", "Body"))
#: Types FastAPI fills from the HTTP request.
_HTTP_ONLY_TYPES = (
    ("starlette.requests", "HTTPConnection"),
    ("starlette.responses", "Response"),
    ("starlette.background", "BackgroundTasks"),
    ("fastapi.security", "SecurityScopes"),
)


def loaded_classes(names: Sequence[tuple[str, str]]) -> tuple[type, ...]:
    """The classes ``(module, name)`` whose module is imported already, for ``isinstance`` and
    ``issubclass``.

    FastAPI's markers and the request types are looked up rather than imported: nothing can be
    an instance or a subclass of a class whose module was never imported, so a worker whose
    handlers use none of them does not import FastAPI (about 7 MiB of memory) at all.
    """
    found: list[type] = []
    for module_name, name in names:
        module = sys.modules.get(module_name)
        cls = getattr(module, name, None) if module is not None else None
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def _depends_types() -> tuple[type[params.Depends], ...]:
    return cast("tuple[type[params.Depends], ...]", loaded_classes(_DEPENDS))


#: How many analysed callables are remembered (overrides are analysed when first used).
_ANALYSIS_CACHE_SIZE = 4096


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
    #: For a dependency: its analysis (``None`` for the publisher behind ``Bus``).
    dependant: Dependant | None = None

    @functools.cached_property
    def cache_key(self) -> Any:
        """A dependency's per-message cache key: the declared dependency (not what overrides
        it) and its scope; ``None`` for one that cannot be hashed (it is not cached)."""
        assert self.depends is not None
        original = dependency_of(self)
        kind = self.dependant.kind if self.dependant is not None else call_kind(original)
        key = (original, scope_of(self.depends, kind))
        try:
            hash(key)
        except TypeError:  # an unhashable callable instance
            return None
        return key


# Telling generator, coroutine and plain callables apart, as FastAPI does: through
# functools.partial and functools.wraps, and through the __call__ of callable instances (but a
# class is called to build an instance, whatever its __call__ is).


def _impartial(call: Any) -> Any:
    while isinstance(call, functools.partial):
        call = call.func
    return call


def _unwrapped(call: Any) -> Any:
    call = _impartial(call)
    try:
        return _impartial(inspect.unwrap(call))
    except ValueError:  # a __wrapped__ loop
        return call


def _is_kind(test: Callable[[Any], bool], call: Any) -> bool:
    if test(_impartial(call)) or test(_unwrapped(call)):
        return True
    if inspect.isclass(_unwrapped(call)):
        return False
    for holder in (_impartial(call), _unwrapped(call)):
        dunder = getattr(holder, "__call__", None)  # noqa: B004 - callable instances
        if dunder is not None and (test(_impartial(dunder)) or test(_unwrapped(dunder))):
            return True
    return False


def _is_coroutine(func: Any) -> bool:
    return inspect.isroutine(func) and inspect.iscoroutinefunction(func)


def call_kind(call: Any) -> str:
    if _is_kind(inspect.isasyncgenfunction, call):
        return "asyncgen"
    if _is_kind(inspect.isgeneratorfunction, call):
        return "gen"
    if _is_kind(_is_coroutine, call):
        return "async"
    return "sync"


@dataclasses.dataclass
class Dependant:
    """A callable and how to fill each of its parameters."""

    call: AnyCallable
    params: list[Param]
    #: The callable's name for error messages ("handler 'x'", "dependency 'get_db' of ...").
    label: str

    @functools.cached_property
    def kind(self) -> str:
        """``"async"``, ``"sync"``, ``"asyncgen"`` or ``"gen"``."""
        return call_kind(self.call)

    @functools.cached_property
    def context_manager(self) -> Callable[..., Any]:
        """For a dependency with ``yield``: its context manager factory, made once."""
        if self.kind == "asyncgen":
            return contextlib.asynccontextmanager(self.call)
        return contextlib.contextmanager(self.call)


@dataclasses.dataclass
class HandlerPlan:
    """Everything the dispatcher needs to call one handler."""

    dependant: Dependant
    #: Dependencies that run before the handler for their side effects (router-level etc.).
    extra: list[Param]
    #: The parameter that receives the event, if the handler has one.
    event_param: Param | None

    @functools.cached_property
    def exits(self) -> bool:
        """Whether a dependency of the handler has ``yield`` (an exit to run after it),
        dependency overrides aside."""
        return self._any_dependency(lambda param: param.dependant.kind in ("gen", "asyncgen"))

    @functools.cached_property
    def function_scoped(self) -> bool:
        """Whether a dependency of the handler is declared with ``scope="function"``,
        dependency overrides aside."""
        return self._any_dependency(
            lambda param: getattr(param.depends, "scope", None) == "function"
        )

    def _any_dependency(self, test: Callable[[Any], bool]) -> bool:
        """Whether ``test`` holds for a dependency parameter anywhere in the graph."""
        seen: set[int] = set()

        def walk(params: Sequence[Param]) -> bool:
            for param in params:
                dependant = param.dependant
                if dependant is None or id(param) in seen:
                    continue
                seen.add(id(param))
                if test(param) or walk(dependant.params):
                    return True
            return False

        return walk(self.extra) or walk(self.dependant.params)


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


def _namespace(call: AnyCallable) -> dict[str, Any]:
    """The globals that the callable's text annotations are evaluated in."""
    target = _unwrapped(call)
    if inspect.isclass(target):
        module = sys.modules.get(target.__module__)
        return vars(module) if module is not None else {}
    if not inspect.isroutine(target):
        target = _unwrapped(getattr(target, "__call__", target))  # noqa: B004
    target = getattr(target, "__func__", target)
    namespace = getattr(target, "__globals__", None)
    return namespace if isinstance(namespace, dict) else {}


def _resolve_annotation(annotation: Any, namespace: dict[str, Any], owner: str, name: str) -> Any:
    """Evaluate a text annotation (``from __future__ import annotations``), one parameter at a
    time: one that cannot be evaluated must not hide the ``Depends`` of the others."""
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, namespace)
    except Exception as exc:
        raise ConfigurationError(
            f"{owner}: the annotation {annotation!r} of parameter {name!r} cannot be evaluated "
            f"({type(exc).__name__}: {exc}). With `from __future__ import annotations`, the "
            "names in annotations must be importable from the module, not local to a function."
        ) from None


def describe(call: AnyCallable) -> str:
    return getattr(call, "__qualname__", None) or getattr(call, "__name__", None) or repr(call)


def _classify(
    name: str, parameter: inspect.Parameter, hint: Any, owner: str, *, handler: bool
) -> Param:
    inner, metadata = _unwrap_annotated(hint)
    depends_types = _depends_types()
    http_markers = loaded_classes(_HTTP_MARKERS)
    depends: params.Depends | None = None
    for item in metadata:
        if isinstance(item, depends_types):
            depends = item
        elif isinstance(item, http_markers):
            return _fail_http(owner, name, item)
    default = parameter.default
    if isinstance(default, depends_types):
        depends = default
    elif isinstance(default, http_markers):
        return _fail_http(owner, name, default)
    if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
        raise ConfigurationError(
            f"{owner}: parameter {name!r}: *args and **kwargs are not supported"
        )
    if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
        raise ConfigurationError(
            f"{owner}: parameter {name!r} is positional-only; handlers and dependencies are "
            "called with keyword arguments"
        )
    if depends is not None:
        if depends.dependency is None and inner is inspect.Parameter.empty:
            raise ConfigurationError(
                f"{owner}: parameter {name!r} uses Depends() without a callable and without a "
                "type annotation to call instead"
            )
        return Param(name, ParamKind.DEPENDENCY, annotation=inner, depends=depends)
    if is_class(inner):
        if issubclass(inner, Message):
            return Param(name, ParamKind.MESSAGE, annotation=inner)
        if issubclass(inner, loaded_classes(_HTTP_ONLY_TYPES)):
            raise _http_only(owner, name, f"a {inner.__name__}")
    if handler and parameter.default is inspect.Parameter.empty:
        # The event is the one plain parameter without a default. Keep Annotated metadata (a
        # discriminator, say): it is part of how the event validates.
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


class _Identity:
    """A dictionary key that compares callables by identity: two equal callable instances are
    still two dependencies, each called itself."""

    __slots__ = ("call",)

    def __init__(self, call: Any) -> None:
        self.call = call

    def __hash__(self) -> int:
        return id(self.call)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Identity) and other.call is self.call


_analysis_cache: dict[_Identity, Dependant] = {}


def analyze(call: AnyCallable, *, owner: str) -> Dependant:
    """Read the signature of a dependency and of its sub-dependencies, recursively."""
    return _analyze_dependency(call, owner=owner, chain=())


def _analyze_dependency(call: AnyCallable, *, owner: str, chain: tuple[Any, ...]) -> Dependant:
    key = _Identity(call)
    cached = _analysis_cache.get(key)
    if cached is not None:
        return cached
    label = f"{owner} -> dependency {describe(call)!r}"
    dependant = _analyze(call, label=label, handler=False, chain=chain)
    if len(_analysis_cache) >= _ANALYSIS_CACHE_SIZE:
        del _analysis_cache[next(iter(_analysis_cache))]
    _analysis_cache[key] = dependant
    return dependant


def dependency_of(param: Param) -> Any:
    assert param.depends is not None
    return param.depends.dependency or param.annotation


def _analyze_param_dependency(
    param: Param, *, owner: str, chain: tuple[Any, ...]
) -> Dependant | None:
    """Analyse the dependency behind ``param`` (``None`` for the publisher behind ``Bus``)."""
    sub_call = dependency_of(param)
    if is_publisher_provider(sub_call):
        return None
    if not callable(sub_call):
        raise ConfigurationError(
            f"{owner}: parameter {param.name!r}: the dependency {sub_call!r} is not callable"
        )
    if any(sub_call is seen for seen in chain):
        raise ConfigurationError(
            f"{owner}: parameter {param.name!r}: dependency {describe(sub_call)!r} depends on "
            "itself (directly or through other dependencies)"
        )
    dependant = _analyze_dependency(sub_call, owner=owner, chain=chain)
    _check_scopes(param, dependant, owner)
    return dependant


def scope_of(depends: params.Depends, kind: str) -> str:
    """The scope FastAPI gives a dependency (of this kind): its own, else "request" for
    generators. (``Depends.scope`` exists from FastAPI 0.121 on.)"""
    scope: str | None = getattr(depends, "scope", None)
    if scope:
        return scope
    return "request" if kind in ("gen", "asyncgen") else ""


def _check_scopes(param: Param, dependant: Dependant, owner: str) -> None:
    assert param.depends is not None
    if scope_of(param.depends, dependant.kind) != "request":
        return
    for sub in dependant.params:
        if sub.depends is not None and getattr(sub.depends, "scope", None) == "function":
            raise ConfigurationError(
                f"{owner}: parameter {param.name!r}: dependency {describe(dependant.call)!r} "
                f"has scope 'request', and its parameter {sub.name!r} has scope 'function': a "
                "dependency with scope 'request' cannot depend on one with scope 'function'"
            )


def _analyze(call: AnyCallable, *, label: str, handler: bool, chain: tuple[Any, ...]) -> Dependant:
    try:
        signature = inspect.signature(call)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{label}: cannot read its signature ({exc})") from None
    namespace = _namespace(call)
    found: list[Param] = []
    for name, parameter in signature.parameters.items():
        hint = _resolve_annotation(parameter.annotation, namespace, label, name)
        param = _classify(name, parameter, hint, label, handler=handler)
        if param.kind is ParamKind.DEPENDENCY:
            # Validate the whole tree now, so that a wrong parameter fails at registration.
            param.dependant = _analyze_param_dependency(param, owner=label, chain=(*chain, call))
        found.append(param)
    return Dependant(call=call, params=found, label=label)


def analyze_handler(
    func: AnyCallable,
    *,
    label: str,
    dependencies: Sequence[params.Depends] = (),
) -> HandlerPlan:
    """Analyse a handler: its event parameter, its dependencies, and the extra ``dependencies``
    of its router(s) and extension. Raises :class:`ConfigurationError` naming the handler and
    the parameter at fault."""
    dependant = _analyze(func, label=label, handler=True, chain=())
    if dependant.kind in ("gen", "asyncgen"):
        raise ConfigurationError(f"{label}: a handler cannot be a generator")
    events = [p for p in dependant.params if p.kind is ParamKind.EVENT]
    if len(events) > 1:
        names = ", ".join(repr(p.name) for p in events)
        raise ConfigurationError(
            f"{label}: parameters {names} all look like the event; a handler takes one event "
            "parameter, and the others must be Depends(...) or Message"
        )
    extra: list[Param] = []
    depends_types = _depends_types()
    for index, depends in enumerate(dependencies):
        if not isinstance(depends, depends_types) or depends.dependency is None:
            raise ConfigurationError(
                f"{label}: dependencies[{index}] must be Depends(callable), got {depends!r}"
            )
        param = Param(f"dependencies[{index}]", ParamKind.DEPENDENCY, depends=depends)
        param.dependant = _analyze_param_dependency(param, owner=label, chain=())
        extra.append(param)
    return HandlerPlan(dependant=dependant, extra=extra, event_param=events[0] if events else None)


def event_type_of(plan: HandlerPlan) -> Any:
    """The annotation of the handler's event parameter, or ``None``."""
    if plan.event_param is None:
        return None
    annotation = plan.event_param.annotation
    return None if annotation is inspect.Parameter.empty else annotation
