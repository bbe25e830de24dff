"""Redis: consume N waiting events, the sides of ``benchmarks/redis_consume.py`` (plain redis-py
``XREADGROUP``/``XACK``+``XDEL`` against an ``EventBus`` on ``RedisTransport``), with counts."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable

from benchmarks.common import PREFETCH, Config, Row, check_counts, interleaved
from benchmarks.counting import counted


async def checked(
    what: str,
    events: int,
    timeout: float,
    side: Callable[[], Awaitable[float]],
    module: types.ModuleType,
) -> float:
    """Run ``side`` (of ``module``) within ``timeout``, counting the events it validates."""
    with counted(module) as seen:
        try:
            elapsed = await asyncio.wait_for(side(), timeout)
        except asyncio.TimeoutError:
            elapsed = timeout
    # Each event validated at least once: redis_consume's sides do not say how often they ran.
    check_counts(what, events, seen, at_most_once=False)
    return elapsed


async def _seconds(side: Awaitable[tuple[float, float]]) -> float:
    """The wall time of a ``redis_consume`` side (which also reports its CPU time)."""
    elapsed, _cpu = await side
    return elapsed


async def run(config: Config) -> list[Row]:
    from benchmarks import redis_consume

    n, url, timeout = config.events, config.redis_url, config.timeout()
    medians = await interleaved(
        config.rounds,
        {
            "plain": lambda: checked(
                "plain redis-py",
                n,
                timeout,
                lambda: _seconds(redis_consume.plain(url, n, PREFETCH, True)),
                redis_consume,
            ),
            "bus": lambda: checked(
                "fastapi-bus on Redis",
                n,
                timeout,
                lambda: _seconds(redis_consume.bus(url, n, PREFETCH)),
                redis_consume,
            ),
        },
    )
    return [
        Row(
            "Redis consume (streams)",
            "events/s",
            n / medians["plain"],
            n / medians["bus"],
            higher_is_better=True,
        )
    ]
