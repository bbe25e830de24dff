"""Handlers with the bus's features in their path, for the ``consume-features`` workload and
``benchmarks/pipeline.py``: a FastAPI dependency (``async def``: a plain ``def`` runs in a
worker thread), solved for every message, and ``idempotent=True``. In a module of its own,
imported only where these are used, so that the other consume workloads (and the ``rss``
children, which check it) never import FastAPI. Without ``from __future__ import
annotations``: the dependency is local to the function that makes the router, and its
annotation is evaluated where it is written.
"""

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends

from benchmarks.common import Tick
from fastapi_bus import EventRouter


def counting_router(
    count: Callable[[Tick], object], *, dependency: bool, idempotent: bool
) -> EventRouter:
    """A router with one handler, ``count``, that calls ``count`` with each event: through a
    dependency if ``dependency``, and idempotent if ``idempotent``."""
    router = EventRouter()
    if not dependency:

        @router.on(Tick, name="count", idempotent=idempotent)
        async def count_event(event: Tick) -> None:
            count(event)

        return router

    async def get_count() -> Callable[[Tick], object]:
        return count

    @router.on(Tick, name="count", idempotent=idempotent)
    async def count_with_dependency(
        event: Tick, counter: Annotated[Callable[[Tick], object], Depends(get_count)]
    ) -> None:
        counter(event)

    return router
