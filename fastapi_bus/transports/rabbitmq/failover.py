"""Reconnecting across several brokers, and logging connection trouble once instead of per try.

aio-pika's robust connection reconnects to the one URL it was opened with.
:class:`FailoverConnection` keeps that machinery (channels and consumers restored on the new
connection) and changes only where each attempt goes: after the connection drops, or after an
attempt fails, the next attempt goes to the next address of the list, round and round, so a bus
connected to a node that died carries on with the others, and comes back to it later.

While it reconnects, aiormq and aio-pika log two lines per failed attempt (every
``reconnect_interval``), and a handful with tracebacks per lost connection;
:func:`quiet_attempts` replaces them with one warning when the connection drops (with the
reason) and one with the count of failed attempts when it is back.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator
from typing import Any

import aio_pika
from yarl import URL

logger = logging.getLogger("fastapi_bus.rabbitmq")

#: Set (and inherited by the tasks aio-pika starts from there) while fastapi-bus reports on
#: connection attempts itself.
_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("fastapi_bus_quiet", default=False)

#: The lines of aiormq and aio-pika that fastapi-bus reports itself, by logger: one or two per
#: failed attempt, and a handful per lost connection (one per channel).
_NOISE = {
    "aiormq.connection": (
        "error when creating transport",
        "Unexpected connection close from remote",
        "Cancelling cause reader exited abnormally",
    ),
    "aio_pika.robust_connection": (
        "Connection attempt to",
        "Connection to %s closed",
        "Reconnect attempt failed",
    ),
    "aio_pika.tools": ("Callback %r error",),
}

# The name aio-pika's robust connection gives the method that makes one connection attempt.
_ATTEMPT_METHOD = "_RobustConnection__connect_transport"


class _NoiseFilter(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        if not (_QUIET.get() and str(record.msg).startswith(self.prefixes)):
            return True
        if record.name == "aio_pika.tools":
            # Only a channel's close callback finding its connection closed, not other errors.
            args = record.args if isinstance(record.args, tuple) else ()
            return not (len(args) == 3 and args[1] == "RuntimeError" and "closed" in str(args[2]))
        return False


for _name, _prefixes in _NOISE.items():
    logging.getLogger(_name).addFilter(_NoiseFilter(_prefixes))


@contextlib.contextmanager
def quiet_attempts() -> Iterator[None]:
    """Drop aiormq's and aio-pika's lines about connection attempts and lost connections in
    this context, and in the tasks and callbacks started from it (the robust connection's
    reconnection task, a channel's close callbacks)."""
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)


def _reason(closing: Any) -> str:
    """Why a connection closed, from the future aio-pika passes to its close callbacks."""
    try:
        exc = closing.exception()
    except BaseException:  # cancelled, or not a future
        exc = None
    return (str(exc) or type(exc).__name__) if exc is not None else "closed"


def failover_supported() -> bool:
    """Whether this aio-pika's robust connection can be taught to rotate addresses."""
    return callable(getattr(aio_pika.RobustConnection, _ATTEMPT_METHOD, None))


class FailoverConnection(aio_pika.RobustConnection):
    """A robust connection that rotates through several broker addresses when reconnecting.

    :meth:`use_addresses` gives it the list and the index it connected to; until then it
    behaves as aio-pika's own.
    """

    def __init__(self, url: URL, *args: Any, **kwargs: Any) -> None:
        super().__init__(url, *args, **kwargs)
        self._addresses: tuple[URL, ...] = (URL(url),)
        self._current = 0
        self._describe: Callable[[int], str] = lambda index: str(self)
        self._failures = 0
        self._advance = False
        self._up = False

    def use_addresses(
        self, urls: tuple[str, ...], current: int, describe: Callable[[int], str]
    ) -> None:
        """Reconnect through ``urls``, starting after ``current`` (the one connected now);
        ``describe(index)`` names an address in logs (password masked)."""
        self._addresses = tuple(URL(url) for url in urls)
        self._current = current
        self._describe = describe

    @property
    def address(self) -> str:
        """The address this connection uses or last used (password masked)."""
        return self._describe(self._current)

    async def _on_connection_close(self, closing: Any) -> None:
        if self._up and not (self._close_called or self.is_closed):
            self._up = False
            logger.warning(
                "lost the connection to RabbitMQ at %s (%s); reconnecting%s",
                self.address,
                _reason(closing),
                " (trying the other addresses)" if len(self._addresses) > 1 else "",
            )
            self._advance = True
        await super()._on_connection_close(closing)

    async def _RobustConnection__connect_transport(self) -> None:
        if self._advance and len(self._addresses) > 1:
            self._current = (self._current + 1) % len(self._addresses)
            self.url = self._addresses[self._current]
        self._advance = True
        reconnecting = self.connection_attempt > 0
        attempt = getattr(super(), _ATTEMPT_METHOD)
        try:
            await attempt()
        except Exception as exc:
            self._failures += 1
            if reconnecting:
                logger.debug("reconnecting to %s failed: %s", self.address, exc)
            raise
        self._up = True
        if reconnecting:
            logger.warning(
                "reconnected to RabbitMQ at %s after %d failed attempt(s)",
                self.address,
                self._failures,
            )
        self._failures = 0
        self._advance = False
