"""The benchmark suite runs, and its count checks fail a run that loses or repeats events.

The numbers themselves are not checked here (the machine is shared and noisy): see
``python -m benchmarks --help`` and docs/performance.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import (
    CountError,
    Row,
    Stopwatch,
    check_counts,
    check_total,
    table,
    take_turns,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.rabbitmq
@pytest.mark.redis
def test_quick_run_prints_the_table(rabbitmq_url: str, redis_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--url", rabbitmq_url,
         "--redis-url", redis_url,
         "--only", "consume-classic,consume-features,publish,latency,memory,redis"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for row in [
        "| RabbitMQ consume, classic queue |",
        "| RabbitMQ consume, classic queue, handler with a dependency and idempotent=True |",
        "| RabbitMQ publish with confirms, sequential",
        "| RabbitMQ publish with confirms, window 256 |",
        "| RabbitMQ end-to-end latency at 1,000 events/s for 1 s (turns of 1 s) | p99 ms",
        "| memory:// publish to handler",
        "| Redis consume (streams) |",
    ]:
        assert row in done.stdout, done.stdout


def test_counts_that_match_pass() -> None:
    check_counts("side", 3, [2, 0, 1])
    check_counts("side", 3, [0, 1, 1, 2], at_most_once=False)
    check_total("queue", 5, 5)


@pytest.mark.parametrize(
    ("seen", "says"),
    [
        ([0, 1], "lost 1 of 3 events (e.g. n=2)"),
        ([0, 1, 2, 7], "handled 1 events it was never given (e.g. n=7)"),
        ([0, 1, 1, 2], "handled 1 events more than once (e.g. n=1)"),
        ([], "lost 3 of 3 events"),
    ],
)
def test_a_wrong_count_fails(seen: list[int], says: str) -> None:
    with pytest.raises(CountError, match="^side: .*" + re.escape(says)):
        check_counts("side", 3, seen)


def test_a_wrong_total_fails() -> None:
    with pytest.raises(CountError, match="expected 5 messages, got 4"):
        check_total("queue", 5, 4)


def test_the_table_has_the_ratio() -> None:
    text = table([Row("consume", "events/s", 1000.0, 800.0, higher_is_better=True)])
    assert "| consume | events/s (higher is better) | 1,000 | 800 | 0.80x |" in text


@pytest.mark.anyio
async def test_sides_take_turns_and_swap_who_starts_each_round() -> None:
    taken: list[tuple[str, int, int]] = []

    async def step(side: str, start: int, stop: int) -> None:
        taken.append((side, start, stop))

    await take_turns(["a", "b"], 5, 2, 0, step)
    assert taken == [("a", 0, 2), ("b", 0, 2), ("b", 2, 4), ("a", 2, 4), ("a", 4, 5), ("b", 4, 5)]
    taken.clear()
    await take_turns(["a", "b"], 3, 2, 1, step)
    assert taken == [("b", 0, 2), ("a", 0, 2), ("a", 2, 3), ("b", 2, 3)]


@pytest.mark.anyio
async def test_a_turn_ends_when_its_events_were_handled_and_fails_when_they_were_not() -> None:
    watch = Stopwatch(4)
    watch.handled(0)
    watch.handled(1)
    await watch.wait_for(2, timeout=5)  # already there
    with pytest.raises(CountError, match="handled 2 of 3 events"):
        await watch.wait_for(3, timeout=0.01)
    watch.handled(2)
    watch.handled(3)
    await watch.wait_for(4, timeout=5)
    assert watch.done.is_set()
    assert watch.seen == [0, 1, 2, 3]
