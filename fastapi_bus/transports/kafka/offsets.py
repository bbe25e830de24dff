"""Which offset of each partition may be committed: the lowest one not yet finished.

Records of one partition may finish out of order (handlers run concurrently); the committed
offset only moves past a record once it and every earlier record are done, so a crash never
skips an unfinished message.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

__all__ = ["OffsetTracker"]

_offset_of = attrgetter("offset")


class OffsetTracker:
    """Offsets taken and not yet finished, per partition, and what is ready to commit."""

    def __init__(self) -> None:
        self._open: dict[Any, set[int]] = {}
        self._next: dict[Any, int] = {}  # one past the highest offset taken
        self._committed: dict[Any, int] = {}
        #: How many offsets are open, over every partition.
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def take(self, tp: Any, offset: int) -> None:
        self.take_all(tp, (offset,))

    def take_all(self, tp: Any, offsets: Sequence[int]) -> None:
        """Take the ``offsets`` of ``tp`` (in ascending order, as a fetch returns them)."""
        still = self._open.get(tp)
        if still is None:
            still = self._open[tp] = set()
        before = len(still)
        still.update(offsets)
        self.count += len(still) - before
        top = offsets[-1] + 1
        if top > self._next.get(tp, 0):
            self._next[tp] = top

    def take_records(self, tp: Any, records: Sequence[Any]) -> set[int]:
        """Take the offsets of ``records`` of ``tp`` (in ascending order, as a fetch returns
        them); returns the set of ``tp``'s open offsets, for a caller that checks and finishes
        each record itself (:meth:`finish_open`). Once ``tp`` is forgotten, the set is empty
        for good: a record taken before holds nothing in the set taken after."""
        still = self._open.get(tp)
        if still is None:
            still = self._open[tp] = set()
        before = len(still)
        still.update(map(_offset_of, records))
        self.count += len(still) - before
        top = records[-1].offset + 1
        if top > self._next.get(tp, 0):
            self._next[tp] = top
        return still

    def finish_open(self, still: set[int], offset: int) -> None:
        """:meth:`finish`, given the set :meth:`take_records` returned."""
        if offset in still:
            still.remove(offset)
            self.count -= 1

    def busy(self, tps: Any) -> int:
        """How many offsets of the partitions ``tps`` are still open."""
        return sum(len(self._open.get(tp, ())) for tp in tps)

    def finish(self, tp: Any, offset: int) -> None:
        still = self._open.get(tp)
        if still is not None and offset in still:
            still.remove(offset)
            self.count -= 1

    def forget(self, tps: Any) -> None:
        """Drop what is known of ``tps`` (their partitions went to another consumer)."""
        for tp in tps:
            still = self._open.pop(tp, None)
            if still:
                self.count -= len(still)
                still.clear()  # whoever holds it sees nothing open
            self._next.pop(tp, None)
            self._committed.pop(tp, None)

    def ready(self) -> dict[Any, int]:
        """The offsets to commit now (only partitions whose committable offset moved)."""
        out: dict[Any, int] = {}
        for tp, top in self._next.items():
            still = self._open.get(tp)
            offset = min(still) if still else top
            if self._committed.get(tp) != offset:
                out[tp] = offset
        return out

    def committed(self, offsets: dict[Any, int]) -> None:
        self._committed.update(offsets)
