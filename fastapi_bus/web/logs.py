"""Where the bus's log lines go while an app server runs the app.

A library must not configure logging: the application decides where records go. But a bare
``uvicorn main:app`` configures only uvicorn's own loggers, so the records of the
``fastapi_bus`` logger reach no handler at all: its INFO lines are dropped and its warnings are
printed by Python's last-resort handler, unformatted. While the app's lifespan runs, and only
when nothing at all handles the ``fastapi_bus`` logger (no handler on it nor on the root
logger), :func:`server_logging` lends it the handlers and the level of the app server's logger
(``uvicorn.error``), so the bus's lines look like the server's own and follow its
``--log-level``.
It gives them back when the lifespan ends, and leaves any logging configuration alone.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

__all__ = ["BUS_LOGGER", "SERVER_LOGGER", "server_logging"]

#: The parent of every logger of the bus.
BUS_LOGGER = "fastapi_bus"

#: The logger of the app server's own lines, whose handlers the bus borrows: uvicorn's config
#: gives them to its parent ``uvicorn``, gunicorn's uvicorn workers give it gunicorn's.
SERVER_LOGGER = "uvicorn.error"


def _handlers_of(name: str) -> list[logging.Handler]:
    """The handlers that get the records of logger ``name``, short of the root logger's."""
    logger: logging.Logger | None = logging.getLogger(name)
    while logger is not None and logger is not logging.root:
        if logger.handlers:
            return list(logger.handlers)
        if not logger.propagate:
            break
        logger = logger.parent
    return []


def _handled(logger: logging.Logger) -> bool:
    """Whether the application gave ``logger``'s records a handler (the bus's own
    ``NullHandler``, which only keeps them off stderr, does not count)."""
    current: logging.Logger | None = logger
    while current is not None:
        if any(not isinstance(handler, logging.NullHandler) for handler in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


class _Loan:
    """The server's handlers lent to one logger, shared by the apps of one process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.borrowers = 0
        self.handlers: list[logging.Handler] = []
        self.level = logging.NOTSET

    def take(self, ours: logging.Logger) -> bool:
        with self.lock:
            if self.borrowers:  # another app of this process borrowed them already
                self.borrowers += 1
                return True
            handlers = [] if _handled(ours) else _handlers_of(SERVER_LOGGER)
            if not handlers:
                return False
            self.borrowers, self.handlers, self.level = 1, handlers, ours.level
            for handler in self.handlers:
                ours.addHandler(handler)
            if ours.level == logging.NOTSET:
                # uvicorn's --log-level sets it on the logger of its own lines.
                ours.setLevel(logging.getLogger(SERVER_LOGGER).getEffectiveLevel())
            return True

    def give_back(self, ours: logging.Logger) -> None:
        with self.lock:
            self.borrowers -= 1
            if self.borrowers:
                return
            for handler in self.handlers:
                ours.removeHandler(handler)
            ours.setLevel(self.level)
            self.handlers = []


_loan = _Loan()


@contextlib.contextmanager
def server_logging() -> Iterator[None]:
    """While inside: if nothing handles the ``fastapi_bus`` logger, lend it the app server's
    handlers."""
    ours = logging.getLogger(BUS_LOGGER)
    if not _loan.take(ours):
        yield
        return
    try:
        yield
    finally:
        _loan.give_back(ours)
