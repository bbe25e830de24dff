"""RabbitMQ nodes that tests own: started on spare ports, with their own node name, data
directory, configuration and Erlang cookie, so that stopping, killing, clustering or alarming
them never touches a broker that anything else uses (the fault suite, the reliability tests).

A node is started as ``rabbitmq-server`` in the foreground (its process is the Erlang VM, so
SIGKILL kills the broker outright) with an environment of its own:

* ``RABBITMQ_NODENAME=faults-<id>-<n>@localhost``, ``RABBITMQ_NODE_PORT`` and
  ``RABBITMQ_DIST_PORT`` on free ports;
* ``RABBITMQ_MNESIA_BASE`` and ``RABBITMQ_LOG_BASE`` under a temporary directory;
* ``RABBITMQ_CONFIG_FILE`` pointing at a generated file (the system one may pin port 5672),
  ``RABBITMQ_CONF_ENV_FILE`` at an empty one, ``RABBITMQ_ENABLED_PLUGINS_FILE`` with none;
* ``HOME`` in the temporary directory, holding an ``.erlang.cookie`` shared by the nodes of a
  cluster and by the ``rabbitmqctl`` calls that talk to them;
* the node's directory as working directory and ``ERL_CRASH_DUMP``, so that nothing lands in
  the checkout.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

#: The scripts themselves: the /usr/sbin wrappers switch to the rabbitmq user.
SBIN = Path("/usr/lib/rabbitmq/bin")


def rabbitmq_installed() -> bool:
    return (SBIN / "rabbitmq-server").exists() or shutil.which("rabbitmq-server") is not None


def _script(name: str) -> str:
    path = SBIN / name
    return str(path) if path.exists() else name


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that are free now."""
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


class NodeError(RuntimeError):
    pass


class RabbitNode:
    """One RabbitMQ node of ours. ``start()`` boots it and waits until it accepts clients."""

    def __init__(
        self, base: Path, name: str, cookie: str, *, conf: str = "", advanced: str = "[]."
    ) -> None:
        """``conf``: lines added to its ``rabbitmq.conf``; ``advanced``: its
        ``advanced.config``."""
        self.name = name
        self._conf = conf
        self._advanced = advanced
        self.nodename = f"{name}@localhost"
        self.base = base / name
        self.home = base / "home"
        self.port, self.dist_port = free_ports(2)
        self.process: subprocess.Popen[bytes] | None = None
        self._cookie = cookie
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _write_files(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(self._cookie)
            cookie.chmod(0o400)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            "log.console = false\n"
            "log.file.level = info\n"
            # Fault tests publish little; keep the alarms out of the way on a small disk.
            "disk_free_limit.absolute = 50MB\n" + self._conf
        )
        (self.base / "advanced.config").write_text(self._advanced + "\n")
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("RABBITMQ")}
        env.update(
            HOME=str(self.home),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.base / "pid"),
            ERL_CRASH_DUMP=str(self.base / "erl_crash.dump"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    # lifecycle

    def start(self, timeout: float = 90.0) -> None:
        """Boot the node (the Erlang VM) and wait until it accepts AMQP clients."""
        self.launch()
        self.await_startup(timeout)

    def launch(self) -> None:
        """Start the VM without waiting (several nodes boot faster side by side)."""
        if self.process is not None and self.process.poll() is None:
            return
        self._write_files()
        log = (self.base / "stdout.log").open("ab")
        self.process = subprocess.Popen(
            [_script("rabbitmq-server")],
            cwd=self.base,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def await_startup(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise NodeError(f"{self.nodename} exited at start-up:\n{self.log_tail()}")
            try:
                self.ctl("await_startup", "--timeout", "30", timeout=40)
                return
            except NodeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n <this node> ...``; its output, or NodeError."""
        return self._tool("rabbitmqctl", *args, timeout=timeout)

    def _tool(self, tool: str, *args: str, timeout: float) -> str:
        try:
            done = subprocess.run(
                [_script(tool), "-n", self.nodename, *args],
                cwd=self.base,
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise NodeError(f"{tool} {' '.join(args)} on {self.nodename} timed out") from None
        if done.returncode != 0:
            raise NodeError(
                f"{tool} {' '.join(args)} on {self.nodename} failed: "
                f"{done.stdout.strip()} {done.stderr.strip()}"
            )
        return done.stdout

    def stop_app(self) -> None:
        """Stop RabbitMQ on the node (clients are disconnected, the VM stays up)."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup", "--timeout", "60", timeout=70)

    def vm_pid(self) -> int | None:
        """The Erlang VM's process id (``rabbitmq-server`` is a script that runs it)."""
        try:
            return int((self.base / "pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL the node's VM: no goodbye to the clients or to the other nodes."""
        assert self.process is not None
        pid = self.vm_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        (self.base / "pid").unlink(missing_ok=True)

    def stop(self) -> None:
        """Shut the node down; SIGKILL if it takes too long."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(NodeError):
            self.ctl("shutdown", timeout=60)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def connections(self) -> int:
        """How many fastapi-bus client connections the node has."""
        out = self.ctl("list_connections", "client_properties", "--quiet", "--no-table-headers")
        return sum("fastapi-bus" in line for line in out.splitlines())

    def log(self) -> str:
        """What the node has logged so far."""
        return "".join(path.read_text() for path in sorted((self.base / "log").glob("*.log")))

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in [self.base / "stdout.log", *sorted((self.base / "log").glob("*.log"))]:
            if path.exists():
                text += f"--- {path.name}\n" + "\n".join(path.read_text().splitlines()[-lines:])
        return text


class Cluster:
    """Nodes that share a cookie; ``form()`` joins every node to the first one."""

    def __init__(self, base: Path, size: int) -> None:
        cookie = secrets.token_hex(20).upper()
        tag = uuid.uuid4().hex[:6]
        self.nodes = [RabbitNode(base, f"faults-{tag}-{n}", cookie) for n in range(1, size + 1)]

    @property
    def url(self) -> str:
        """A multi-host URL of every node."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"amqp://guest:guest@{hosts}/"

    def start(self, timeout: float = 120.0) -> None:
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.await_startup(timeout)

    def form(self) -> None:
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("reset")
            node.ctl("join_cluster", first.nodename)
            node.start_app()
        members = first.ctl("cluster_status", "--formatter", "json")
        missing = [node.nodename for node in self.nodes if node.nodename not in members]
        if missing:
            raise NodeError(f"{missing} did not join the cluster: {members}")

    def stop(self) -> None:
        stop_all(self.nodes)


def stop_all(nodes: Iterable[RabbitNode]) -> None:
    """Kill the nodes outright: their data directories are thrown away anyway."""
    for node in nodes:
        if node.alive():
            node.kill()


@contextlib.contextmanager
def own_node(conf: str = "", advanced: str = "[].") -> Iterator[RabbitNode]:
    """A started node of the caller's own, stopped and removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="fastapi-bus-node-"))
    node = RabbitNode(
        base, f"own-{uuid.uuid4().hex[:8]}", secrets.token_hex(20).upper(), conf=conf,
        advanced=advanced,
    )  # fmt: skip
    try:
        node.start()
        yield node
    finally:
        node.stop()
        stop_all([node])
        shutil.rmtree(base, ignore_errors=True)
