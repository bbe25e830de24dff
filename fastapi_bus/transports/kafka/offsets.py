"""Which offset of each partition may be committed: the lowest one not yet finished.

Records of one partition may finish out of order (handlers run concurrently); the committed
offset only moves past a record once it and every earlier record are done, so a crash never
skips an unfinished message.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OffsetTracker"]


class OffsetTracker:
    """Offsets taken and not yet finished, per partition, and what is ready to commit."""

    def __init__(self) -> None:
        self._open: dict[Any, set[int]] = {}
        self._next: dict[Any, int] = {}  # one past the highest offset taken
        self._committed: dict[Any, int] = {}

    def __len__(self) -> int:
        return sum(len(offsets) for offsets in self._open.values())

    def take(self, tp: Any, offset: int) -> None:
        self._open.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def holds(self, tp: Any, offset: int) -> bool:
        return offset in self._open.get(tp, ())

    def busy(self, tps: Any) -> int:
        """How many offsets of the partitions ``tps`` are still open."""
        return sum(len(self._open.get(tp, ())) for tp in tps)

    def finish(self, tp: Any, offset: int) -> None:
        self._open.get(tp, set()).discard(offset)

    def forget(self, tps: Any) -> None:
        """Drop what is known of ``tps`` (their partitions went to another consumer)."""
        for tp in tps:
            self._open.pop(tp, None)
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
