"""Optional HTTP routes to inspect, replay and purge dead letters.

Off by default. Turn them on with ``BusExtension(admin_url="/events/admin",
admin_dependencies=[Depends(require_admin)])``: they can delete messages, so they refuse to
start without dependencies that protect them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, FastAPI, HTTPException, Query, params
from pydantic import BaseModel, Field

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.runtime.bus import EventBus
from fastapi_bus.runtime.deadletters import DeadLetter, Filters

__all__ = ["install_admin_routes"]


class DeadLetterOut(BaseModel):
    """A dead-lettered message, as the admin API shows it."""

    message_id: str
    event: str
    handler: str
    queue: str
    reason: str
    exception_type: str | None
    exception_message: str | None
    attempts: int
    first_failure_at: datetime | None
    last_failure_at: datetime | None
    correlation_id: str | None
    headers: dict[str, str]
    body: str
    traceback: str | None = None

    @classmethod
    def of(cls, letter: DeadLetter, *, traceback: bool = False) -> DeadLetterOut:
        message = letter.message
        return cls(
            message_id=message.id,
            event=message.name,
            handler=letter.handler,
            queue=letter.queue,
            reason=letter.reason,
            exception_type=letter.exception_type,
            exception_message=letter.exception_message,
            attempts=letter.attempts,
            first_failure_at=letter.first_failure_at,
            last_failure_at=letter.last_failure_at,
            correlation_id=message.correlation_id,
            headers={k: v for k, v in message.headers.items() if k != "x-bus-traceback"},
            body=message.body.decode("utf-8", "replace"),
            traceback=letter.traceback if traceback else None,
        )


class Selection(BaseModel):
    """Which dead letters to list, replay or purge: the :class:`Filters` of the dead-letter
    tools, with ages in seconds. Every filter given must match."""

    handler: str | None = None
    exception_type: str | None = None
    older_than_seconds: float | None = Field(default=None, ge=0)
    newer_than_seconds: float | None = Field(default=None, ge=0)
    message_ids: list[str] | None = None

    def filters(self) -> Filters:
        return Filters(
            handler=self.handler,
            exception_type=self.exception_type,
            older_than=_age(self.older_than_seconds),
            newer_than=_age(self.newer_than_seconds),
            message_ids=self.message_ids,
        )


class Listing(Selection):
    """The query of the list route: a :class:`Selection` and how many at most."""

    limit: int = Field(default=100, ge=1, le=10_000)


def _age(seconds: float | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=seconds)


def install_admin_routes(
    app: FastAPI, bus: EventBus, *, prefix: str, dependencies: Sequence[params.Depends]
) -> None:
    """Add the dead-letter admin routes under ``prefix``, guarded by ``dependencies``
    (``BusExtension`` has checked that there are some)."""
    router = APIRouter(prefix=prefix, dependencies=list(dependencies), tags=["fastapi-bus admin"])

    def unknown_handler(exc: ConfigurationError) -> HTTPException:
        return HTTPException(status_code=404, detail=str(exc))

    @router.get("/dead-letters", response_model=list[DeadLetterOut])
    async def list_dead_letters(listing: Annotated[Listing, Query()]) -> list[DeadLetterOut]:
        """Dead-lettered messages, oldest first."""
        try:
            letters = await bus.dead_letters.list(limit=listing.limit, **listing.filters())
        except ConfigurationError as exc:
            raise unknown_handler(exc) from None
        return [DeadLetterOut.of(letter) for letter in letters]

    @router.get("/dead-letters/{message_id}", response_model=DeadLetterOut)
    async def show_dead_letter(message_id: str) -> DeadLetterOut:
        """One dead letter, with its traceback."""
        letter = await bus.dead_letters.show(message_id)
        if letter is None:
            raise HTTPException(status_code=404, detail=f"no dead letter {message_id}")
        return DeadLetterOut.of(letter, traceback=True)

    @router.post("/dead-letters/replay")
    async def replay_dead_letters(selection: Selection) -> dict[str, int]:
        """Send matching dead letters back to their handlers' queues."""
        try:
            return {"replayed": await bus.dead_letters.replay(**selection.filters())}
        except ConfigurationError as exc:
            raise unknown_handler(exc) from None

    @router.post("/dead-letters/purge")
    async def purge_dead_letters(selection: Selection) -> dict[str, int]:
        """Delete matching dead letters for good."""
        try:
            return {"purged": await bus.dead_letters.purge(**selection.filters())}
        except ConfigurationError as exc:
            raise unknown_handler(exc) from None

    app.include_router(router)
