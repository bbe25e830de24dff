"""Broker addresses: one URL, a multi-host URL, or a list of URLs, and the URL's own options.

A multi-host URL names several nodes of one cluster with one set of credentials, virtual host
and parameters, as PostgreSQL and MongoDB URLs do::

    amqp://shop:secret@rabbit1:5672,rabbit2:5672,rabbit3:5672/prod?heartbeat=30

It is split into one single-host URL per node, which is what aio-pika connects to. A list of
URLs does the same for nodes that need different credentials or parameters.

The query parameter ``connect_timeout`` belongs to fastapi-bus (how long ``start()`` retries)
and is taken out before the URLs reach aio-pika, which gets the other parameters.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.transports.base import redact_url

__all__ = ["BrokerAddresses", "parse_addresses"]

#: Query parameters that configure fastapi-bus rather than aio-pika.
CONNECT_TIMEOUT_PARAMETER = "connect_timeout"


@dataclasses.dataclass(frozen=True)
class BrokerAddresses:
    """The nodes to connect to, in the order to try them."""

    #: One ``amqp://`` or ``amqps://`` URL per node, credentials included.
    urls: tuple[str, ...]
    #: What to show in logs and errors: one multi-host URL, password masked.
    display: str
    #: The ``connect_timeout`` query parameter, if the URL had one.
    connect_timeout: float | None = None

    @property
    def passwords(self) -> frozenset[str]:
        """Every password in the URLs, to scrub from text quoted from the broker."""
        return frozenset(
            unquote(password) for url in self.urls if (password := urlsplit(url).password)
        )

    def redacted(self, index: int) -> str:
        """The URL of node ``index``, password masked."""
        return redact_url(self.urls[index])


def parse_addresses(url: str | Sequence[str]) -> BrokerAddresses:
    """Split ``url`` (a URL, a multi-host URL or a list of URLs) into one URL per node.

    Raises :class:`~fastapi_bus.ConfigurationError` for a URL that is not ``amqp://`` or
    ``amqps://``, an empty host, a bad port or a bad ``connect_timeout``.
    """
    given = [url] if isinstance(url, str) else list(url)
    if not given:
        raise ConfigurationError("RabbitMQTransport needs at least one broker URL")
    urls: list[str] = []
    timeouts: list[float] = []
    for item in given:
        if not isinstance(item, str):
            raise ConfigurationError(f"a broker URL must be a string, not {item!r}")
        nodes, timeout = _split(item)
        urls.extend(nodes)
        if timeout is not None:
            timeouts.append(timeout)
    schemes = {urlsplit(node).scheme for node in urls}
    if len(schemes) > 1:
        raise ConfigurationError(
            "the broker URLs mix amqp:// and amqps://: "
            + ", ".join(redact_url(node) for node in urls)
        )
    if len(set(urls)) != len(urls):
        raise ConfigurationError(
            "a broker address is listed twice: " + ", ".join(redact_url(node) for node in urls)
        )
    return BrokerAddresses(tuple(urls), _display(urls), min(timeouts) if timeouts else None)


def _display(urls: list[str]) -> str:
    """One multi-host URL for them all, with the first one's user, path and query, password
    masked: what logs, errors and the AsyncAPI document show."""
    first = urlsplit(urls[0])
    userinfo, at, _ = first.netloc.rpartition("@")
    hosts = ",".join(urlsplit(url).netloc.rpartition("@")[2] for url in urls)
    return redact_url(
        urlunsplit((first.scheme, f"{userinfo}{at}{hosts}", first.path, first.query, ""))
    )


def _split(url: str) -> tuple[list[str], float | None]:
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigurationError(
            f"RabbitMQTransport needs an amqp:// or amqps:// URL, got {redact_url(url)!r}"
        )
    query, timeout = _take_connect_timeout(parts.query, url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    nodes: list[str] = []
    for host in hosts.split(","):
        host = host.strip()
        if not host and len(hosts.split(",")) > 1:
            raise ConfigurationError(f"an empty host in the broker URL {redact_url(url)!r}")
        node = urlunsplit((parts.scheme, f"{userinfo}{at}{host}", parts.path, query, ""))
        try:
            urlsplit(node).port  # noqa: B018 (it raises for a bad port)
        except ValueError as exc:
            raise ConfigurationError(
                f"bad port in the broker URL {redact_url(url)!r}: {exc}"
            ) from None
        nodes.append(node)
    return nodes, timeout


def _take_connect_timeout(query: str, url: str) -> tuple[str, float | None]:
    """``query`` without ``connect_timeout=...`` (kept verbatim otherwise), and its value."""
    kept: list[str] = []
    timeout: float | None = None
    for pair in query.split("&") if query else []:
        key, _, value = pair.partition("=")
        if unquote(key) != CONNECT_TIMEOUT_PARAMETER:
            kept.append(pair)
            continue
        try:
            timeout = float(unquote(value))
        except ValueError:
            timeout = math.nan
        if not math.isfinite(timeout) or timeout <= 0:
            raise ConfigurationError(
                f"connect_timeout in {redact_url(url)!r} must be a positive number of "
                f"seconds, not {unquote(value)!r}"
            )
    return "&".join(kept), timeout
