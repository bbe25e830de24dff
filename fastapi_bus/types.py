"""Shared vocabulary: the shapes of the callables that the layers pass to each other."""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi_bus.messages import Message

#: Wire headers: always text keys and text values, so that every broker can carry them.
Headers = dict[str, str]

#: What a transport calls for each delivery. Returning acks the message; raising leaves it
#: unacknowledged so that the broker delivers it again.
Consumer = Callable[["Message"], Awaitable[None]]

#: Any callable a user registers: a handler or a dependency.
AnyCallable = Callable[..., Any]


def is_class(tp: object) -> bool:
    """True for a real class. (On Python 3.10, ``dict[str, int]`` passes ``inspect.isclass``
    but not ``issubclass``.)"""
    return isinstance(tp, type) and not isinstance(tp, types.GenericAlias)


def is_model(tp: object) -> bool:
    """True for a pydantic model class."""
    from pydantic import BaseModel

    return is_class(tp) and issubclass(tp, BaseModel)  # type: ignore[arg-type]
