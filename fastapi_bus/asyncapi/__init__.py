"""The AsyncAPI document of a bus, and the pages that serve it.

The generator, the page renderer and PyYAML load on first use (a name imported from here, or
the first request for the document): a process that only consumes events, or never serves the
document, does not hold them in memory.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi_bus.asyncapi.docs import (
        DEFAULT_CSS_URL,
        DEFAULT_JS_URL,
        get_asyncapi_html,
        install_asyncapi_routes,
    )
    from fastapi_bus.asyncapi.generate import get_asyncapi

__all__ = [
    "DEFAULT_CSS_URL",
    "DEFAULT_JS_URL",
    "get_asyncapi",
    "get_asyncapi_html",
    "install_asyncapi_routes",
]

_HOMES = {
    "DEFAULT_CSS_URL": "docs",
    "DEFAULT_JS_URL": "docs",
    "get_asyncapi": "generate",
    "get_asyncapi_html": "docs",
    "install_asyncapi_routes": "docs",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
