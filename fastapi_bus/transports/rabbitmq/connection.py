"""Reaching RabbitMQ: opening the robust connection, and short-lived channels on it.

The connection is opened with retries until ``connect_timeout``, trying the broker addresses in
turn, except when the broker refuses the credentials or the TLS certificate: trying again would
not help. Every error names the broker by its redacted URL
and has the password scrubbed from what aio-pika or the broker said.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import tenacity

from fastapi_bus.core.exceptions import ConfigurationError, TransportError
from fastapi_bus.transports.rabbitmq.addresses import BrokerAddresses
from fastapi_bus.transports.rabbitmq.failover import (
    FailoverConnection,
    failover_supported,
    quiet_attempts,
)

logger = logging.getLogger("fastapi_bus.rabbitmq")

#: Bound on broker round trips that are not publishes (declares, cancels, closes).
OPERATION_TIMEOUT = 15.0

_AUTHENTICATION_ERRORS = (
    aio_pika.exceptions.AuthenticationError,
    aio_pika.exceptions.ProbableAuthenticationError,
)


def _certificate_error(exc: BaseException) -> bool:
    """True if ``exc`` comes from a certificate that failed to verify: waiting will not help.
    aiormq wraps the SSL error in a connection error, so look through the chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(current):
            return True
        nested = [arg for arg in current.args if isinstance(arg, BaseException)]
        current = current.__cause__ or current.__context__ or (nested[0] if nested else None)
    return False


def connect_options(
    url: str, *, reconnect_interval: float, ssl_context: ssl.SSLContext | None
) -> dict[str, Any]:
    """Keyword arguments for ``aio_pika.connect_robust``, besides the URL's own parameters."""
    query = parse_qs(urlsplit(url).query)
    options: dict[str, Any] = {
        "client_properties": {
            "connection_name": f"fastapi-bus {socket.gethostname()} pid {os.getpid()}",
        },
    }
    if "reconnect_interval" not in query:
        options["reconnect_interval"] = reconnect_interval
    if ssl_context is not None:
        options["ssl_context"] = ssl_context
    return options


async def connect(
    addresses: BrokerAddresses,
    *,
    connect_timeout: float,
    options: dict[str, Any],
    scrub: Callable[[str], str],
) -> FailoverConnection:
    """Open a robust connection to one of ``addresses``, trying them in turn for up to
    ``connect_timeout`` seconds.

    Logs one warning when the first attempt fails and one line with the count when an attempt
    succeeds; aiormq's and aio-pika's own per-attempt lines are left out. Raises
    :class:`~fastapi_bus.TransportError`, whose text has the password scrubbed and the count.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + connect_timeout
    urls = addresses.urls
    if len(urls) > 1 and not failover_supported():  # pragma: no cover (an aio-pika change)
        raise ConfigurationError(
            "this version of aio-pika cannot be told to reconnect to other addresses: "
            "give one broker URL (a load balancer in front of the cluster)"
        )
    tried = 0

    def retryable(exc: BaseException) -> bool:
        if isinstance(exc, _AUTHENTICATION_ERRORS) or _certificate_error(exc):
            return False
        return isinstance(exc, (OSError, asyncio.TimeoutError, aio_pika.exceptions.AMQPError))

    def log_retry(state: tenacity.RetryCallState) -> None:
        if state.attempt_number > 1:
            return
        exc = state.outcome.exception() if state.outcome else None
        logger.warning(
            "cannot connect to RabbitMQ at %s (%s); retrying for up to %gs",
            addresses.redacted((tried - 1) % len(urls)),
            scrub(str(exc) or type(exc).__name__),
            connect_timeout,
        )

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_delay(connect_timeout),
        wait=tenacity.wait_exponential(multiplier=0.2, max=5),
        retry=tenacity.retry_if_exception(retryable),
        before_sleep=log_retry,
        reraise=True,
    )
    try:
        with quiet_attempts():
            async for attempt in retrying:
                with attempt:
                    index = tried % len(urls)
                    tried += 1
                    timeout = max(deadline - loop.time(), 1.0)
                    connection: FailoverConnection = await aio_pika.connect_robust(
                        urls[index], timeout=timeout, connection_class=FailoverConnection, **options
                    )
        connection.use_addresses(urls, index, addresses.redacted)
        if tried > 1:
            logger.warning(
                "connected to RabbitMQ at %s after %d attempts (%.1fs)",
                addresses.redacted(index),
                tried,
                loop.time() - started,
            )
        return connection
    except _AUTHENTICATION_ERRORS as exc:
        user = urlsplit(urls[(tried - 1) % len(urls)]).username or "guest"
        raise TransportError(
            f"RabbitMQ at {addresses.display} refused the credentials of user {user!r}: "
            f"{scrub(str(exc))}"
        ) from None
    except Exception as exc:
        if _certificate_error(exc):
            raise TransportError(
                f"cannot connect to RabbitMQ at {addresses.display}: its TLS certificate does "
                f"not verify against the ssl_context: {scrub(str(exc) or type(exc).__name__)}"
            ) from None
        raise TransportError(
            f"cannot connect to RabbitMQ at {addresses.display} within {connect_timeout:g}s "
            f"({tried} attempt{'s' if tried != 1 else ''}): "
            f"{scrub(str(exc) or type(exc).__name__)}"
        ) from None


@contextlib.asynccontextmanager
async def temporary_channel(
    connection: aio_pika.abc.AbstractRobustConnection,
    *,
    url: str,
    scrub: Callable[[str], str],
) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A plain channel for operations that may fail: a broker error closes only it.

    ``url`` is the redacted URL, for the errors.
    """
    channel = aio_pika.Channel(connection, publisher_confirms=False)
    try:
        await asyncio.wait_for(connection.ready(), OPERATION_TIMEOUT)
        await asyncio.wait_for(channel.initialize(), OPERATION_TIMEOUT)
    except asyncio.TimeoutError:
        raise TransportError(f"RabbitMQ at {url} did not answer in time") from None
    except aio_pika.exceptions.AMQPError as exc:
        raise TransportError(
            f"cannot open a channel to RabbitMQ at {url}: {scrub(str(exc))}"
        ) from None
    try:
        yield channel
    finally:
        if not channel.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), OPERATION_TIMEOUT)
