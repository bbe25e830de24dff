"""Pytest fixtures for apps that use fastapi-bus.

Enable them in your ``conftest.py``::

    pytest_plugins = ["fastapi_bus.pytest_plugin"]

- ``bus_published``: call it with a running ``TestClient`` (or an app, or a bus) to record
  what that bus sends until the test ends; it returns a
  :class:`~fastapi_bus.testing.PublishedEvents`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastapi_bus.testing import PublishedEvents, record_published

__all__ = ["bus_published"]


@pytest.fixture
def bus_published() -> Iterator[Callable[[Any], PublishedEvents]]:
    """Start recording what a bus publishes: ``published = bus_published(client)``."""
    with contextlib.ExitStack() as stack:

        def start(target: Any) -> PublishedEvents:
            return stack.enter_context(record_published(target))

        yield start
