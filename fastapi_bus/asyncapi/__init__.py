"""The AsyncAPI document of a bus, and the pages that serve it."""

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
