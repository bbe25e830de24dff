"""Retries and dead-lettering: what happens to a message whose handler fails.

1. **In process**: the handler is called again, up to ``RetryPolicy.attempts`` times, with
   exponential backoff and jitter (tenacity), for the exception types the policy names.
2. **Through the broker**: then the message goes back to its queue after a delay (the next of
   ``RetryPolicy.delays``), with its attempt count raised; the consumer is free meanwhile and
   nothing is held unacknowledged. The copy is confirmed before the original is acknowledged.
3. **Dead-letter queue**: when the delays are used up, or at once for a message that can never
   succeed (it does not validate, or its handler raised ``Reject``, or an exception the policy
   does not retry), the message goes to the handler's dead-letter queue with the reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from datetime import datetime, timezone

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from fastapi_bus.dispatcher import InvalidMessage, dead_letter_headers
from fastapi_bus.exceptions import ConfigurationError, HandlerSignal, Reject, Retry
from fastapi_bus.faults import FAULT_EVENT, Fault
from fastapi_bus.middleware import ConsumeApp, Delivery

__all__ = ["FailureMiddleware", "RetryPolicy"]

logger = logging.getLogger("fastapi_bus.retry")

FIRST_FAILURE = "x-bus-first-failure-at"


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

    def delay_for(self, attempt: int) -> float | None:
        """The delay before redelivery after failed delivery ``attempt``, or ``None`` when
        the redeliveries are used up."""
        if attempt > len(self.delays):
            return None
        delay = self.delays[attempt - 1]
        return delay * (1 + random.uniform(0, self.jitter))


def _jittered(delay: float, jitter: float) -> float:
    return delay * (1 + random.uniform(0, jitter))


class FailureMiddleware:
    """The outermost step of every handler: in-process retries, redelivery, dead letters."""

    def __init__(self, app: ConsumeApp, *, policy: RetryPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, delivery: Delivery) -> None:
        try:
            await self._call_with_retries(delivery)
        except InvalidMessage as exc:
            await self._dead_letter(delivery, exc.reason, exc)
        except Reject as exc:
            await self._dead_letter(delivery, f"rejected by the handler: {exc.reason}", exc)
        except Retry as exc:
            await self._redeliver_or_dead_letter(delivery, exc, exc.delay)
        except Exception as exc:
            if not self.policy.retries(exc):
                reason = f"{type(exc).__name__} is not retried: {exc}"
                await self._dead_letter(delivery, reason, exc)
                return
            await self._redeliver_or_dead_letter(delivery, exc, None)

    async def _call_with_retries(self, delivery: Delivery) -> None:
        policy = self.policy
        # The first call is made directly: most calls succeed, and tenacity's bookkeeping is
        # worth paying only once there is something to retry.
        try:
            await self.app(delivery)
            return
        except Exception as exc:
            if policy.attempts == 1 or not policy.retries(exc):
                raise
        await asyncio.sleep(_jittered(policy.backoff, policy.jitter))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts - 1),
            wait=wait_exponential(multiplier=policy.backoff * 2, max=policy.max_backoff)
            + wait_random(0, policy.backoff * policy.jitter),
            retry=retry_if_exception(policy.retries),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self.app(delivery)

    async def _redeliver_or_dead_letter(
        self, delivery: Delivery, exc: BaseException, requested: float | None
    ) -> None:
        message = delivery.message
        delay = self.policy.delay_for(message.attempt)
        if delay is not None and requested is not None:
            delay = requested
        if delay is None or delivery.route.broadcast:
            why = "its redeliveries are used up" if delay is None else "broadcast handler"
            await self._dead_letter(
                delivery, f"failed after {message.attempt} deliveries ({why}): {exc!r}", exc
            )
            return
        now = datetime.now(timezone.utc).isoformat()
        headers = {**message.headers}
        headers.setdefault(FIRST_FAILURE, now)
        retry = message.replace(attempt=message.attempt + 1, headers=headers, redelivered=False)
        logger.warning(
            "%s failed on message %s (delivery %d): %r; redelivering in %.1fs",
            delivery.route.label,
            message.id,
            message.attempt,
            exc,
            delay,
        )
        # The copy is confirmed by the broker before the original is acknowledged (on return).
        await delivery.bus.transport.send(delivery.queue, retry, delay=delay)
        delivery.bus.metrics.retried(delivery.route.name, message.name, delay)

    @staticmethod
    async def _dead_letter(delivery: Delivery, reason: str, exc: BaseException | None) -> None:
        message = delivery.message
        bus = delivery.bus
        headers = {**message.headers, **dead_letter_headers(delivery, reason, exc)}
        logger.warning(
            "dead-lettering message %s (%s) from %s: %s",
            message.id,
            message.name,
            delivery.queue,
            reason.splitlines()[0],
        )
        await bus.transport.dead_letter(delivery.queue, message.replace(headers=headers))
        bus.metrics.dead_lettered(delivery.route.name, message.name, reason)
        if bus.publishes_faults and message.name != FAULT_EVENT:
            fault = Fault(
                message_id=message.id,
                event=message.name,
                service=bus.service,
                handler=delivery.route.name,
                queue=delivery.queue,
                reason=reason,
                exception_type=headers.get("x-bus-exception-type"),
                exception_message=headers.get("x-bus-exception-message"),
                attempts=message.attempt,
                failed_at=datetime.now(timezone.utc),
                correlation_id=message.correlation_id,
            )
            encoded = bus.encode(
                fault, correlation_id=message.correlation_id, causation_id=message.id
            )
            await bus.transport.publish(encoded)
