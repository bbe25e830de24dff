"""Retries and dead-lettering: what happens to a message whose handler fails.

1. **In process**: the handler is called again, up to ``RetryPolicy.attempts`` times, with
   exponential backoff and jitter (``RetryPolicy.backoff_for``), for the exception types the
   policy names.
2. **Through the broker**: then the message goes back to its queue after a delay (the next of
   ``RetryPolicy.delays``), with its attempt count raised; the consumer is free meanwhile and
   nothing is held unacknowledged. The copy is confirmed before the original is acknowledged.
3. **Dead-letter queue**: when the delays are used up, or at once for a message that can never
   succeed (it does not validate, or its handler raised ``Reject``, or an exception the policy
   does not retry), the message goes to the handler's dead-letter queue with the reason.
"""

from __future__ import annotations

import asyncio
import linecache
import logging
import traceback
from datetime import datetime, timezone

from fastapi_bus.core import headers as H
from fastapi_bus.core.exceptions import Reject, Retry
from fastapi_bus.core.logs import message_extra
from fastapi_bus.pipeline.decoding import InvalidMessage
from fastapi_bus.pipeline.delivery import ConsumeApp, Delivery
from fastapi_bus.pipeline.handler import HandlerEnv
from fastapi_bus.pipeline.policy import RetryPolicy

__all__ = ["FailureMiddleware", "dead_letter_headers"]

logger = logging.getLogger("fastapi_bus.retry")

#: Failure headers are trimmed to this many characters (tracebacks to twice as many).
MAX_HEADER_TEXT = 2000


class FailureMiddleware:
    """The outermost step of every handler: in-process retries, redelivery, dead letters."""

    def __init__(self, app: ConsumeApp, *, policy: RetryPolicy, env: HandlerEnv) -> None:
        self.app = app
        self.policy = policy
        self.env = env

    async def __call__(self, delivery: Delivery) -> None:
        # Most calls succeed: the first is made without any retry bookkeeping around it.
        try:
            await self.app(delivery)
        except Exception as exc:
            await self.recover(delivery, exc)

    async def recover(self, delivery: Delivery, first_failure: Exception) -> None:
        """What follows a first call that raised ``first_failure``: the retries, then
        redelivery or the dead-letter queue. Returning settles the message."""
        try:
            await self._retry(delivery, first_failure)
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

    async def _retry(self, delivery: Delivery, failure: Exception) -> None:
        """Call the handler again after its first ``failure``, as the policy says; raises the
        last failure if every attempt fails."""
        policy = self.policy
        for retry in range(1, policy.attempts):
            if not policy.retries(failure):
                break
            await asyncio.sleep(policy.backoff_for(retry))
            try:
                await self.app(delivery)
                return
            except Exception as exc:
                failure = exc
        raise failure

    async def _redeliver_or_dead_letter(
        self, delivery: Delivery, exc: BaseException, requested: float | None
    ) -> None:
        message = delivery.message
        delay = self.policy.delay_for(message.attempt)
        if delay is not None and requested is not None:
            delay = requested
        if delay is None or delivery.route.broadcast:
            await self._dead_letter(delivery, _gave_up(message.attempt, delay, exc), exc)
            return
        now = datetime.now(timezone.utc).isoformat()
        headers = {**message.headers}
        headers.setdefault(H.FIRST_FAILURE_AT, now)
        retry = message.replace(attempt=message.attempt + 1, headers=headers, redelivered=False)
        logger.warning(
            "%s failed on message %s (delivery %d): %r; redelivering in %.1fs",
            delivery.route.label,
            message.id,
            message.attempt,
            exc,
            delay,
            extra=message_extra(message, delivery.route.name),
        )
        # The copy is confirmed by the broker before the original is acknowledged (on return).
        await self.env.transport.send(delivery.queue, retry, delay=delay)
        self.env.metrics.retried(delivery.route.name, message.name, delay)

    async def _dead_letter(
        self, delivery: Delivery, reason: str, exc: BaseException | None
    ) -> None:
        message = delivery.message
        env = self.env
        headers = {**message.headers, **dead_letter_headers(delivery, reason, exc)}
        logger.warning(
            "dead-lettering message %s (%s) from %s: %s",
            message.id,
            message.name,
            delivery.queue,
            reason.splitlines()[0],
            extra=message_extra(message, delivery.route.name),
        )
        dead = message.replace(headers=headers)
        await env.transport.dead_letter(delivery.queue, dead)
        env.metrics.dead_lettered(delivery.route.name, message.name, reason)
        await env.on_dead_letter(delivery, dead, reason)


def _gave_up(attempt: int, delay: float | None, exc: BaseException) -> str:
    """Why a failing message is dead-lettered instead of redelivered."""
    if delay is not None:
        why = "a broadcast handler is not redelivered through the broker"
    elif attempt == 1:
        why = "its retry policy has no redeliveries"
    else:
        why = "its redeliveries are used up"
    deliveries = "1 delivery" if attempt == 1 else f"{attempt} deliveries"
    return f"failed after {deliveries} ({why}): {exc!r}"


def _trim(text: str, limit: int = MAX_HEADER_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dead_letter_headers(
    delivery: Delivery, reason: str, exc: BaseException | None
) -> dict[str, str]:
    """The headers that explain why a message was dead-lettered."""
    now = datetime.now(timezone.utc).isoformat()
    headers = {
        H.DEAD_LETTER_REASON: _trim(reason),
        H.HANDLER: delivery.route.name,
        H.QUEUE: delivery.queue,
        H.ATTEMPTS: str(delivery.message.attempt),
        H.FIRST_FAILURE_AT: delivery.message.headers.get(H.FIRST_FAILURE_AT, now),
        H.LAST_FAILURE_AT: now,
    }
    if exc is not None:
        cause = exc.__cause__ if isinstance(exc, InvalidMessage) and exc.__cause__ else exc
        headers[H.EXCEPTION_TYPE] = f"{type(cause).__module__}.{type(cause).__qualname__}"
        headers[H.EXCEPTION_MESSAGE] = _trim(str(cause))
        text = format_traceback(cause)
        limit = 2 * MAX_HEADER_TEXT
        # The innermost frames and the exception are at the end: those are the ones kept.
        headers[H.TRACEBACK] = text if len(text) <= limit else "..." + text[3 - limit :]
    return headers


def format_traceback(exc: BaseException) -> str:
    """The traceback as Python prints it, chained exceptions included, without the ``^^^``
    markers under each line (finding their columns parses the source of every frame, which made
    dead-lettering a poison flood several times slower than handling the good messages)."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        lines = []
        if current.__traceback__ is not None:
            lines.append("Traceback (most recent call last):\n")
            for frame, lineno in traceback.walk_tb(current.__traceback__):
                code = frame.f_code
                lines.append(f'  File "{code.co_filename}", line {lineno}, in {code.co_name}\n')
                source = linecache.getline(code.co_filename, lineno, frame.f_globals).strip()
                if source:
                    lines.append(f"    {source}\n")
        lines.extend(traceback.format_exception_only(type(current), current))
        parts.append("".join(lines))
        if current.__cause__ is not None:
            parts.append(
                "\nThe above exception was the direct cause of the following exception:\n\n"
            )
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            parts.append(
                "\nDuring handling of the above exception, another exception occurred:\n\n"
            )
            current = current.__context__
        else:
            current = None
    return "".join(reversed(parts))
