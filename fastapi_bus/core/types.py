"""Shared vocabulary: the shapes of the callables that the layers pass to each other."""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

#: Wire headers: always text keys and text values, so that every broker can carry them.
Headers = dict[str, str]

#: Any callable a user registers: a handler or a dependency.
AnyCallable = Callable[..., Any]


def is_class(tp: object) -> bool:
    """True for a real class. (On Python 3.10, ``dict[str, int]`` passes ``inspect.isclass``
    but not ``issubclass``.)"""
    return isinstance(tp, type) and not isinstance(tp, types.GenericAlias)


def is_model(tp: object) -> bool:
    """True for a pydantic model class."""
    return is_class(tp) and issubclass(tp, BaseModel)  # type: ignore[arg-type]


#: The keywords each TypedDict given to :func:`check_options` names.
_KNOWN: dict[type, frozenset[str]] = {}


def check_options(options: Mapping[str, object], allowed: type, call: str) -> None:
    """Refuse keywords that the TypedDict ``allowed`` does not name, as Python refuses an
    unexpected keyword argument: with a :class:`TypeError` naming ``call`` and the keyword."""
    if not options:
        return
    known = _KNOWN.get(allowed)
    if known is None:
        known = _KNOWN[allowed] = allowed.__required_keys__ | allowed.__optional_keys__  # type: ignore[attr-defined]
    for name in options:
        if name not in known:
            raise TypeError(f"{call}() got an unexpected keyword argument {name!r}")
