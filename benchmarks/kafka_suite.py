"""Kafka: consume N waiting events, the sides of ``benchmarks/kafka_consume.py`` (a plain
aiokafka ``getmany`` loop against an ``EventBus`` on ``KafkaTransport``), with counts.

Without ``--kafka-bootstrap`` it starts a Tansu broker of its own (requirements/tansu.txt);
where that is not installed, the workload is skipped with a note.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from statistics import median

from benchmarks.common import PREFETCH, Config, Row, SkipWorkload
from benchmarks.redis_suite import checked

ROOT = Path(__file__).resolve().parent.parent


def tansu_available() -> bool:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        from tests.kafka_broker import tansu_binary
    except ImportError:
        return False
    return tansu_binary() is not None


async def run(config: Config) -> list[Row]:
    try:
        from benchmarks import kafka_consume
    except ImportError as exc:
        raise SkipWorkload(f"aiokafka is not installed: {exc}") from None
    if config.kafka_bootstrap is None and not tansu_available():
        raise SkipWorkload("no --kafka-bootstrap and no Tansu broker (requirements/tansu.txt)")
    n, timeout = config.events, config.timeout()
    with contextlib.ExitStack() as stack:
        bootstrap = stack.enter_context(kafka_consume.broker(config.kafka_bootstrap))
        times = await kafka_consume.rounds(  # each round starts with another side
            {
                "plain": lambda: checked(
                    "plain aiokafka", n, timeout,
                    lambda: kafka_consume.plain(bootstrap, n, PREFETCH), kafka_consume,
                ),
                "bus": lambda: checked(
                    "fastapi-bus on Kafka", n, timeout,
                    lambda: kafka_consume.bus(bootstrap, n, PREFETCH), kafka_consume,
                ),
            },
            config.rounds,
        )  # fmt: skip
    medians = {name: median(values) for name, values in times.items()}
    return [
        Row(
            "Kafka consume, Tansu broker" if config.kafka_bootstrap is None else "Kafka consume",
            "events/s",
            n / medians["plain"],
            n / medians["bus"],
            higher_is_better=True,
            note="timed from the first event handled",
        )
    ]
