"""The handler of the ``consume-features`` workload: one FastAPI dependency (``async def``),
solved for every message, and ``idempotent=True``. In a module of its own, imported only by
that workload, so that the other consume workloads (and the ``rss`` children, which check it)
never import FastAPI. Without ``from __future__ import annotations``: the dependency is local
to the function that makes the router, and its annotation is evaluated where it is written.
"""

from typing import Annotated

from fastapi import Depends

from benchmarks.common import Stopwatch, Tick
from fastapi_bus import EventRouter


def router_with_features(watch: Stopwatch) -> EventRouter:
    router = EventRouter()

    async def get_watch() -> Stopwatch:  # ``async``: a plain ``def`` runs in a worker thread
        return watch

    @router.on(Tick, idempotent=True)
    async def handle_with_features(
        event: Tick, counted: Annotated[Stopwatch, Depends(get_watch)]
    ) -> None:
        counted.handled(event.n)

    return router
