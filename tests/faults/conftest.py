"""The fault suite's brokers: RabbitMQ nodes it starts, breaks and throws away.

``FAULTS_EVENTS`` (at least this many events per scenario, default 300) and ``FAULTS_ROUNDS``
(fault rounds per scenario, default 1 for the single node and 3 for the cluster) make the
long versions; see docs/faults.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.rabbitmq_nodes import Cluster, RabbitNode, rabbitmq_installed, stop_all
from tests.utils import MEASURED


def _require_rabbitmq() -> None:
    if not rabbitmq_installed():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("rabbitmq-server is not installed (CI=true): the fault suite must run")
        pytest.skip("rabbitmq-server is not installed")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """One node of our own, for a module."""
    _require_rabbitmq()
    base = tmp_path_factory.mktemp("node")
    made = Cluster(base, 1).nodes[0]
    try:
        made.start()
        yield made
    finally:
        stop_all([made])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes of our own, clustered, for a module."""
    _require_rabbitmq()
    made = Cluster(tmp_path_factory.mktemp("cluster"), 3)
    try:
        made.start()
        made.form()
        yield made
    finally:
        made.stop()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path


def events_at_least() -> int:
    return int(os.environ.get("FAULTS_EVENTS", "300"))


def rounds(default: int) -> int:
    return int(os.environ.get("FAULTS_ROUNDS", str(default)))


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record one measured line: shown in the terminal summary (it travels with the test's
    report, so it also comes back from pytest-xdist's processes; tests/conftest.py prints it),
    and appended to the file named by ``FAULTS_REPORT`` if set."""

    def add(line: str) -> None:
        request.node.user_properties.append((MEASURED, line))
        path = os.environ.get("FAULTS_REPORT")
        if path:
            with open(path, "a") as sink:
                sink.write(line + "\n")

    return add
