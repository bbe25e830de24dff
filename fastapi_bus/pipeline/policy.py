"""``RetryPolicy``: how often, and how soon, a failing handler is tried again."""

from __future__ import annotations

import dataclasses
import random

from fastapi_bus.core.exceptions import ConfigurationError, HandlerSignal
from fastapi_bus.pipeline.decoding import InvalidMessage

__all__ = ["RetryPolicy"]


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How a failing handler is retried. Set on a handler, a router or the extension; the
    nearest one wins.

    Args:
        attempts: calls of the handler per delivery, in process (1 = no in-process retry).
        backoff: wait before the first in-process retry, in seconds; doubles each time.
        max_backoff: the longest in-process wait.
        delays: delays, in seconds, of the redeliveries through the broker after the in-process
            attempts fail; one redelivery per entry. ``()`` = none.
        jitter: each delay is stretched by a random fraction up to this much (0.1 = 10%), so
            that failures do not come back in lockstep.
        retry_on: the exception types worth retrying; any other goes to the dead-letter queue
            at once.
    """

    attempts: int = 3
    backoff: float = 0.1
    max_backoff: float = 2.0
    delays: tuple[float, ...] = (10.0, 60.0, 300.0)
    jitter: float = 0.1
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigurationError("RetryPolicy.attempts must be at least 1")
        if self.backoff < 0 or self.max_backoff < 0 or self.jitter < 0:
            raise ConfigurationError("RetryPolicy backoff, max_backoff and jitter must be >= 0")
        if any(delay < 0 for delay in self.delays):
            raise ConfigurationError("RetryPolicy.delays must not be negative")
        object.__setattr__(self, "delays", tuple(self.delays))
        if isinstance(self.retry_on, type):
            object.__setattr__(self, "retry_on", (self.retry_on,))

    @classmethod
    def never(cls) -> RetryPolicy:
        """No retries: a failing message goes straight to the dead-letter queue."""
        return cls(attempts=1, delays=())

    def retries(self, exc: BaseException) -> bool:
        """True if ``exc`` is worth another attempt."""
        if isinstance(exc, (HandlerSignal, InvalidMessage)):
            return False
        return isinstance(exc, self.retry_on)

    def backoff_for(self, retry: int) -> float:
        """The wait before in-process retry number ``retry`` (1 for the first): ``backoff``,
        doubled for each retry after the first, at most ``max_backoff``, stretched by
        ``jitter``."""
        wait = min(self.backoff * 2.0 ** (retry - 1), self.max_backoff)
        return wait * (1 + random.uniform(0, self.jitter))

    def delay_for(self, attempt: int) -> float | None:
        """The delay before redelivery after failed delivery ``attempt``, or ``None`` when
        the redeliveries are used up."""
        if attempt > len(self.delays):
            return None
        delay = self.delays[attempt - 1]
        return delay * (1 + random.uniform(0, self.jitter))
