"""A three-node cluster with quorum queues: the node the bus is connected to is killed.

The nodes are the suite's own (``faults-<id>-1..3@localhost``, joined with
``rabbitmqctl join_cluster``). Publishers and workers get every node's address in one
multi-host URL. Each round kills (SIGKILL) the node that holds the clients' connections, checks
that they all move to the surviving nodes and that the stream flows on, then starts the node
again, which rejoins the cluster. With the default three rounds, the clients move 1 -> 2 -> 3
and back to 1. At the end, every event whose publish returned was handled.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.conftest import events_at_least, rounds
from tests.faults.stream import Stream
from tests.rabbitmq_nodes import Cluster, NodeError, RabbitNode

pytestmark = [pytest.mark.anyio, pytest.mark.faults, pytest.mark.rabbitmq]

CLIENTS = 5  # 3 publishers and 2 workers, one connection each


async def connections(cluster: Cluster) -> collections.Counter[str]:
    """fastapi-bus connections per node name, asked of any live node (the list is
    cluster-wide; a connection's server port tells its node)."""
    by_port = {str(node.port): node.nodename for node in cluster.nodes}
    for node in cluster.nodes:
        if not node.alive():
            continue
        try:
            out = await asyncio.to_thread(
                node.ctl, "list_connections", "port", "client_properties", "--quiet"
            )
        except NodeError:
            continue
        return collections.Counter(
            by_port[line.split()[0]] for line in out.splitlines() if "fastapi-bus" in line
        )
    raise AssertionError("no node answers")


async def settled(cluster: Cluster, timeout: float = 60.0) -> collections.Counter[str]:
    """Wait until all the clients are connected to live nodes; where they are."""
    found: collections.Counter[str] = collections.Counter()
    alive = {node.nodename for node in cluster.nodes if node.alive()}

    async def check() -> bool:
        nonlocal found
        found = await connections(cluster)
        return sum(n for name, n in found.items() if name in alive) == CLIENTS

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"clients did not settle on {sorted(alive)}: {dict(found)}")
        await asyncio.sleep(0.5)  # each look is a rabbitmqctl call: poll gently
    return found


def busiest(cluster: Cluster, found: collections.Counter[str]) -> RabbitNode:
    name = found.most_common(1)[0][0]
    return next(node for node in cluster.nodes if node.nodename == name)


def diagnosis(cluster: Cluster, stream: Stream, killed: list[str]) -> str:
    """What a failed run leaves to look at: the counts, the queues and their replicas."""
    text = (
        f"killed: {killed}, published: {len(stream.published)}, "
        f"handled: {stream.handled_count()}, publish errors: {stream.errors[:3]}\n"
    )
    for node in cluster.nodes:
        if node.alive():
            try:
                text += node.ctl("list_queues", "name", "leader", "online", "messages", "--quiet")
            except NodeError as exc:
                text += str(exc)
            break
    return text


async def test_killing_the_connected_node_fails_over_and_back(
    cluster: Cluster, out: Path, report: Callable[[str], None]
) -> None:
    stream = Stream(cluster.url, out, events_at_least=events_at_least())
    killed: list[str] = []
    try:
        await stream.start()
        await stream.wait_progress()
        found = await settled(cluster)
        for _ in range(rounds(3)):
            victim = busiest(cluster, found)
            await asyncio.to_thread(victim.kill)
            killed.append(victim.nodename)
            found = await settled(cluster)
            assert victim.nodename not in found
            await stream.wait_progress()
            await asyncio.to_thread(victim.start)  # it rejoins the cluster as it boots
        await stream.wait_progress()
        measured = await stream.finish()
    except BaseException:
        print(diagnosis(cluster, stream, killed))
        await stream.abort()
        raise
    scenario = f"cluster node killed x{len(killed)}"
    report(f"{measured.line(scenario)}; killed {killed}, clients end on {dict(found)}")
    assert measured.missing == 0
    assert measured.publish_errors == 0, stream.errors[:5]
    assert measured.published >= events_at_least()
    if len(killed) >= 3:
        # Back: the clients ended on a node that had been killed and came back.
        assert set(found) & set(killed), (found, killed)
