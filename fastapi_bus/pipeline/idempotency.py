"""Idempotent handlers: skip a message this handler has already processed.

Delivery is at-least-once: after a crash, a lost acknowledgement or a replay, a handler can see
the same message again. ``@events.on(..., idempotent=True)`` records each message id the
handler processed successfully and skips it the next time. The built-in store lives in the
process's memory; replicas of a service need a shared store (implement :class:`IdempotencyStore`
over your database or Redis), ideally written in the same transaction as the handler's work.
"""

from __future__ import annotations

import abc
import collections
import time

from fastapi_bus.core.metrics import Metrics
from fastapi_bus.pipeline.delivery import ConsumeApp, Delivery

__all__ = ["IdempotencyMiddleware", "IdempotencyStore", "MemoryIdempotencyStore"]


class IdempotencyStore(abc.ABC):
    """Where idempotent handlers remember the messages they processed."""

    @abc.abstractmethod
    async def seen(self, key: str) -> bool:
        """True if ``key`` was remembered and has not expired."""

    @abc.abstractmethod
    async def remember(self, key: str) -> None:
        """Record ``key`` as processed."""


class MemoryIdempotencyStore(IdempotencyStore):
    """Keys in process memory, kept for ``ttl`` seconds, at most ``max_keys`` (oldest go first)."""

    def __init__(self, *, ttl: float = 24 * 3600, max_keys: int = 100_000) -> None:
        self.ttl = ttl
        self.max_keys = max_keys
        self._keys: collections.OrderedDict[str, float] = collections.OrderedDict()

    async def seen(self, key: str) -> bool:
        expires = self._keys.get(key)
        if expires is None:
            return False
        if expires < time.monotonic():
            del self._keys[key]
            return False
        return True

    async def remember(self, key: str) -> None:
        self._keys[key] = time.monotonic() + self.ttl
        self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)


class IdempotencyMiddleware:
    """Skips messages the handler already processed; remembers the ones it processes now."""

    def __init__(self, app: ConsumeApp, *, store: IdempotencyStore, metrics: Metrics) -> None:
        self.app = app
        self.store = store
        self.metrics = metrics

    async def __call__(self, delivery: Delivery) -> None:
        key = f"{delivery.queue}:{delivery.message.id}"
        if await self.store.seen(key):
            self.metrics.skipped(delivery.route.name, delivery.message.name)
            return
        await self.app(delivery)
        await self.store.remember(key)
