"""A RabbitMQ node of a test's own, for what must not happen to a shared broker (resource
alarms): its own node name, ports, data directory, config and cookie, under a temporary
directory, started with the installed ``rabbitmq-server`` and stopped (and removed) after."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["OwnNode", "own_node"]


def _sbin() -> Path:
    """Where the server's own scripts are (not the wrapper that switches to its system user)."""
    packaged = Path("/usr/lib/rabbitmq/bin")
    if packaged.exists():
        return packaged
    found = shutil.which("rabbitmq-server")
    return Path(found).resolve().parent if found else packaged


SBIN = _sbin()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def available() -> bool:
    return (SBIN / "rabbitmq-server").exists() and (SBIN / "rabbitmqctl").exists()


class OwnNode:
    """``conf``: lines added to its ``rabbitmq.conf``; ``advanced``: its ``advanced.config``."""

    def __init__(self, root: Path, conf: str = "", advanced: str = "[].") -> None:
        self.root = root
        self.name = f"fastapibus{uuid.uuid4().hex[:8]}@localhost"
        self.port = _free_port()
        (root / "home").mkdir()
        (root / "enabled_plugins").write_text("[].\n")  # no management listener to clash
        (root / "rabbitmq-env.conf").write_text("")  # not the system's (it names the node)
        (root / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n{conf}"
        )
        (root / "advanced.config").write_text(advanced + "\n")
        self.env = {
            **os.environ,
            "HOME": str(root / "home"),  # the Erlang cookie lives here
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(_free_port()),
            "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(root / "log"),
            "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(root / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(root / "pid"),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def ctl(self, *args: str, timeout: float = 60) -> str:
        done = subprocess.run(
            [str(SBIN / "rabbitmqctl"), "-n", self.name, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return done.stdout

    def log(self) -> str:
        """What the node has logged so far."""
        return "".join(path.read_text() for path in sorted((self.root / "log").glob("*.log")))

    def start(self) -> None:
        with (self.root / "server.log").open("wb") as log:
            self.process = subprocess.Popen(
                [str(SBIN / "rabbitmq-server")],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while True:
            try:
                self.ctl("await_startup", "--timeout", "10", timeout=30)
                return
            except subprocess.CalledProcessError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"RabbitMQ node {self.name} did not start; see {self.root}/server.log"
                    ) from None

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.ctl("stop", timeout=60)
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # the group it started, and only it
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


@contextlib.contextmanager
def own_node(conf: str = "", advanced: str = "[].") -> Iterator[OwnNode]:
    root = Path(tempfile.mkdtemp(prefix="fastapi-bus-node-"))
    node = OwnNode(root, conf, advanced)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        shutil.rmtree(root, ignore_errors=True)
