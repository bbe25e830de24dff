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

from benchmarks.common import CountError, Row, check_counts, check_total, table

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.rabbitmq
@pytest.mark.redis
def test_quick_run_prints_the_table(rabbitmq_url: str, redis_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--url", rabbitmq_url,
         "--redis-url", redis_url,
         "--only", "consume-classic,consume-features,publish,memory,redis"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for row in [
        "| RabbitMQ consume, classic queue |",
        "| RabbitMQ consume, classic queue, handler with a dependency and idempotent=True |",
        "| RabbitMQ publish with confirms, sequential",
        "| RabbitMQ publish with confirms, window 256 |",
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
