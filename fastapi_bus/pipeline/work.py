"""The unit of work of one handler call: the events it publishes, held until it returns.

Most handlers publish nothing, so a call does not make its unit of work up front. It binds a
*work cell* to the running context instead: a list ``[owner, message]``, where ``owner`` is the
bus whose handler runs and ``message`` the one being handled (about a tenth of the cost of an
object with methods, for every message). Then one of two things happens first:

* the call publishes: the publishing side (which knows how) makes the :class:`UnitOfWork` and
  appends it to the cell, in :func:`claim`'s place;
* the call ends: the pipeline appends :data:`SETTLED` (it returned) or :data:`DISCARDED` (it
  raised).

Whatever was appended first, ``cell[2]``, decides. Appending to a list and reading an item are
each one atomic step, so a worker thread publishing (``publish_sync``) while the call ends
needs no lock on the pipeline's side: if the end came first, that publish finds the call over
(and its event goes out at once, or is refused after a failure, as after the end of any unit of
work); otherwise the pipeline finds the unit of work and sends (or drops) what it holds.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from typing import Any, Protocol

__all__ = ["DISCARDED", "SETTLED", "UnitOfWork", "WorkEnd", "claimed_work"]


class WorkEnd(enum.Enum):
    """How a handler call ended, as appended to its work cell."""

    SETTLED = "settled"
    DISCARDED = "discarded"


#: The handler returned: what it published is sent.
SETTLED = WorkEnd.SETTLED
#: The handler raised: what it published is dropped.
DISCARDED = WorkEnd.DISCARDED


class UnitOfWork(Protocol):
    """The events one handler call published, held back until it returns (made by the call's
    first publish; see the module's docstring)."""

    @property
    def publisher(self) -> Any:
        """What a ``bus: Bus`` parameter of the handler receives."""

    def discard(self) -> None:
        """The call failed: drop what it published."""

    def flush(self) -> Awaitable[None]:
        """The call succeeded: send what it published, in order."""


def claimed_work(cell: list[Any], end: WorkEnd) -> UnitOfWork | None:
    """End the call whose work cell this is: the unit of work its publishes made, if they came
    first (to flush or discard), else ``None``."""
    cell.append(end)
    first = cell[2]
    return None if first is end else first
