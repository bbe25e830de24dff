"""How long a handler may run, given its own ``timeout``, the bus's default and the broker.

RabbitMQ closes a consumer's channel when a delivery stays unacknowledged longer than its
``consumer_timeout`` (30 minutes by default), which would put every message of that channel
back and cancel the other handlers' work. A transport that has such a limit says so with a
``consumer_timeout`` attribute (seconds, or ``None``); the bus then makes sure that no delivery
can be held that long: a handler's whole stay (waiting for a free slot behind the other
prefetched messages, then every in-process attempt and backoff) must fit in 90% of it. A handler
without a timeout gets the longest one that fits; a timeout that does not fit is a
``ConfigurationError`` at start.
"""

from __future__ import annotations

import math
from typing import Protocol

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.pipeline.delivery import ConsumeApp
from fastapi_bus.pipeline.policy import RetryPolicy
from fastapi_bus.pipeline.timeouts import TimeoutMiddleware, check_timeout
from fastapi_bus.routing.route import EventRoute
from fastapi_bus.transports.base import Transport

__all__ = ["check_timeout", "effective_timeout", "with_timeout"]


class BusDefaults(Protocol):
    """What the timeout of a handler depends on besides the handler (an EventBus)."""

    transport: Transport
    prefetch: int
    concurrency: int | None
    handler_timeout: float | None


#: The share of the broker's consumer timeout the bus plans to use; the rest is for settling.
BROKER_TIMEOUT_SHARE = 0.9


def _longest_fitting(limit: float, prefetch: int, concurrency: int, policy: RetryPolicy) -> float:
    """The longest per-call timeout with which a delivery is settled within ``limit``."""
    rounds = math.ceil(prefetch / concurrency)
    backoffs = (policy.attempts - 1) * policy.max_backoff * (1 + policy.jitter)
    return (limit * BROKER_TIMEOUT_SHARE / rounds - backoffs) / policy.attempts


def effective_timeout(route: EventRoute, bus: BusDefaults, policy: RetryPolicy) -> float | None:
    """The timeout of one call of ``route``'s handler (``None``: unlimited)."""
    timeout = route.timeout if route.timeout is not None else bus.handler_timeout
    limit = bus.transport.consumer_timeout
    if limit is None:
        return timeout
    prefetch = route.prefetch or bus.prefetch
    concurrency = min(prefetch, route.concurrency or bus.concurrency or prefetch)
    fitting = _longest_fitting(limit, prefetch, concurrency, policy)
    if fitting <= 0 or (timeout is not None and timeout > fitting):
        raise ConfigurationError(
            f"{route.label}: a message could stay unacknowledged longer than the broker's "
            f"consumer timeout ({limit:g}s), which closes the channel: with prefetch "
            f"{prefetch}, concurrency {concurrency} and {policy.attempts} attempt(s), the "
            f"timeout must be at most {max(fitting, 0):.4g}s (it is {timeout!r}). Lower the "
            "timeout, the attempts or the prefetch, or raise consumer_timeout on the broker "
            "and on the transport"
        )
    return fitting if timeout is None else timeout


def with_timeout(
    pipeline: ConsumeApp, route: EventRoute, bus: BusDefaults, policy: RetryPolicy
) -> ConsumeApp:
    """``pipeline`` wrapped in the handler's timeout, if it has one."""
    timeout = effective_timeout(route, bus, policy)
    if timeout is None:
        return pipeline
    return TimeoutMiddleware(pipeline, seconds=timeout, label=route.label)
