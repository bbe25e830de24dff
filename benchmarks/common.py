"""What every workload of ``python -m benchmarks`` shares: the event, the options, interleaved
rounds with medians, the count checks, and the markdown table.

This module imports neither a broker driver nor fastapi-bus, so that it loads anywhere.
"""

from __future__ import annotations

import collections
import dataclasses
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from pydantic import BaseModel

#: The filler that makes an event about 230 bytes of JSON.
PAYLOAD = "x" * 200
#: Deliveries a consumer may hold unacknowledged, on both sides of every workload.
PREFETCH = 128

S = TypeVar("S")


class Tick(BaseModel):
    """The event of every workload: ``{"n": ..., "payload": "xxx..."}``, about 230 bytes."""

    n: int
    payload: str


def tick_body(n: int) -> bytes:
    return Tick(n=n, payload=PAYLOAD).model_dump_json().encode()


@dataclasses.dataclass(frozen=True)
class Config:
    """The command's options, as every workload sees them."""

    events: int = 20_000
    rounds: int = 3
    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    redis_url: str = "redis://127.0.0.1:6379/0"
    kafka_bootstrap: str | None = None
    #: HTTP requests per side and round, and how many are in flight at once.
    requests: int = 3_000
    http_concurrency: int = 32
    #: The latency workload: events per second, for this many seconds.
    rate: int = 1_000
    seconds: float = 5.0
    #: The RSS soak: seconds of steady flow per side (0: no soak).
    soak: float = 0.0
    #: How many times a workload that failed with an error (not a wrong count) runs again.
    retries: int = 1
    quick: bool = False

    def timeout(self, events: int | None = None) -> float:
        """Seconds a side may take before it counts as stuck (then its count check fails)."""
        return 60.0 + (self.events if events is None else events) / 200


class CountError(Exception):
    """A side handled, stored or answered something other than exactly what it was given."""


def check_counts(
    what: str, expected: int, seen: Iterable[int], *, at_most_once: bool = True
) -> None:
    """Raise :class:`CountError` unless ``seen`` (the ``n`` of every event handled) holds each
    of ``0 .. expected-1`` (exactly once if ``at_most_once``) and nothing else."""
    counts = collections.Counter(seen)
    missing = expected - sum(1 for n in counts if 0 <= n < expected)
    foreign = sorted(n for n in counts if not 0 <= n < expected)
    twice = sorted(n for n, count in counts.items() if count > 1) if at_most_once else []
    problems = []
    if missing:
        example = next(n for n in range(expected) if n not in counts)
        problems.append(f"lost {missing} of {expected} events (e.g. n={example})")
    if foreign:
        problems.append(f"handled {len(foreign)} events it was never given (e.g. n={foreign[0]})")
    if twice:
        problems.append(f"handled {len(twice)} events more than once (e.g. n={twice[0]})")
    if problems:
        distinct = len(counts) - len(foreign)
        raise CountError(
            f"{what}: {'; '.join(problems)}: {distinct} distinct of {expected}, "
            f"{sum(counts.values())} in all"
        )


def check_total(what: str, expected: int, got: int, unit: str = "messages") -> None:
    """Raise :class:`CountError` unless ``got == expected`` (e.g. messages left in a queue)."""
    if got != expected:
        raise CountError(f"{what}: expected {expected} {unit}, got {got}")


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: a metric of the plain driver and of fastapi-bus, medians."""

    workload: str
    metric: str
    plain: float
    bus: float
    #: Whether a larger value is better (rates) or worse (CPU time, latency, memory).
    higher_is_better: bool
    note: str = ""

    @property
    def ratio(self) -> float:
        """fastapi-bus / plain."""
        return self.bus / self.plain if self.plain else float("nan")


class SkipWorkload(Exception):
    """A workload that cannot run here (its broker is not installed): a note, not a failure."""


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A workload that did not run, and why."""

    workload: str
    reason: str


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


async def interleaved(
    rounds: int, sides: dict[str, Callable[[], Awaitable[float]]]
) -> dict[str, float]:
    """Run each side once per round, in turn (so noise hits every side alike): the medians."""
    results: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, side in sides.items():
            results[name].append(await side())
    return {name: median(values) for name, values in results.items()}


async def take_turns(
    sides: Sequence[S],
    events: int,
    turn: int,
    round_number: int,
    step: Callable[[S, int, int], Awaitable[None]],
) -> None:
    """Run ``step(side, start, stop)`` over events ``0 .. events-1`` in turns of ``turn``
    events, each turn taken by every side: ``a, b``, then ``b, a``, then ``a, b``, ... (``b``
    starts in odd rounds), so that a slow spell of the machine falls on both sides alike."""
    order = list(sides) if round_number % 2 == 0 else list(sides)[::-1]
    for start in range(0, events, turn):
        stop = min(start + turn, events)
        for side in order:
            await step(side, start, stop)
        order.reverse()


class Stopwatch:
    """Counts the ``n`` of each event handled and tells when ``expected`` distinct ones were.

    The counts live in a buffer allocated up front, so that counting does not grow the process
    while it runs (the soak measures that growth).
    """

    def __init__(self, expected: int) -> None:
        import asyncio

        self.expected = expected
        self._counts = bytearray(expected)
        self._distinct = 0
        self._foreign: list[int] = []
        self.done = asyncio.Event()
        self.start = time.perf_counter()
        self.end = 0.0
        # A turn (see wait_for) is over when this many distinct events were handled.
        self._mark = expected
        self._marked = self.done
        if expected == 0:
            self.done.set()

    def handled(self, n: int) -> None:
        if not 0 <= n < self.expected:
            self._foreign.append(n)
            return
        count = self._counts[n]
        if count < 255:
            self._counts[n] = count + 1
        if count == 0:
            self._distinct += 1
            if self._distinct == self._mark:
                self._reached()

    def _reached(self) -> None:
        self._marked.set()
        if self._distinct == self.expected:
            self.end = time.perf_counter()
            self.done.set()

    @property
    def seen(self) -> list[int]:
        """The ``n`` of every event handled, once per time it was handled."""
        seen = [n for n, count in enumerate(self._counts) for _ in range(count)]
        return seen + self._foreign

    async def wait(self, timeout: float) -> None:
        """Until every event was handled, or ``timeout`` (then the count check tells)."""
        import asyncio
        import contextlib

        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.done.wait(), timeout)
        if not self.done.is_set():
            self.end = time.perf_counter()

    async def wait_for(self, distinct: int, timeout: float) -> None:
        """Until ``distinct`` distinct events were handled (the end of a turn), or ``timeout``
        (then raise :class:`CountError`)."""
        import asyncio

        if self._distinct >= distinct:
            return
        self._mark, self._marked = distinct, asyncio.Event()
        try:
            await asyncio.wait_for(self._marked.wait(), timeout)
        except asyncio.TimeoutError:
            raise CountError(
                f"handled {self._distinct} of {distinct} events within {timeout:.0f} s"
            ) from None
        finally:
            self._mark, self._marked = self.expected, self.done

    @property
    def elapsed(self) -> float:
        return self.end - self.start


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: Sequence[Row], skipped: Sequence[Skipped] = ()) -> str:
    """The markdown table of ``rows``; skipped workloads follow as a list."""
    lines = [
        "| workload | metric | plain driver | fastapi-bus | fastapi-bus / plain |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        better = "higher is better" if row.higher_is_better else "lower is better"
        metric = f"{row.metric} ({better})"
        workload = f"{row.workload} ({row.note})" if row.note else row.workload
        lines.append(
            f"| {workload} | {metric} | {_number(row.plain)} | {_number(row.bus)} "
            f"| {row.ratio:.2f}x |"
        )
    if skipped:
        lines.append("")
    for skip in skipped:
        lines.append(f"- {skip.workload}: not run ({skip.reason})")
    return "\n".join(lines) + "\n"
