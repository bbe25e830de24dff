"""What a ``kafka://`` URL says: the bootstrap servers, credentials and client options.

``kafka://[USER:PASSWORD@]host:9092,host2:9092[?security_protocol=SASL_SSL&sasl_mechanism=...]``:
a user and password in the URL are SASL credentials (``PLAIN`` unless ``sasl_mechanism`` says
otherwise); query parameters are passed to aiokafka's clients. The password never appears in
``url``, logs or errors.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote

from fastapi_bus.core.exceptions import ConfigurationError

__all__ = ["ParsedURL", "parse_url"]

#: Query parameters the URL may carry, passed on to aiokafka as they are.
_QUERY = {
    "security_protocol",
    "sasl_mechanism",
    "client_id",
    "request_timeout_ms",
    "sasl_kerberos_service_name",
    "sasl_kerberos_domain_name",
}
_INTEGERS = {"request_timeout_ms"}


class ParsedURL:
    """A ``kafka://`` URL taken apart."""

    def __init__(self, bootstrap: list[str], options: dict[str, Any], safe: str) -> None:
        self.bootstrap = bootstrap
        self.options = options
        #: The URL with the password replaced by ``***``.
        self.safe = safe
        self.password: str | None = options.get("sasl_plain_password")


def parse_url(url: str) -> ParsedURL:
    """Parse ``url``; a ConfigurationError (without the password) says what is wrong."""
    scheme, sep, rest = url.partition("://")
    if scheme != "kafka" or not sep:
        raise ConfigurationError("KafkaTransport needs a kafka:// URL")
    rest, _, query = rest.partition("?")
    rest = rest.split("/", 1)[0]
    userinfo, at, hosts = rest.rpartition("@")
    options: dict[str, Any] = {}
    safe_userinfo = ""
    if at:
        user, _, password = userinfo.partition(":")
        options["sasl_plain_username"] = unquote(user)
        options["sasl_plain_password"] = unquote(password)
        options["sasl_mechanism"] = "PLAIN"
        options["security_protocol"] = "SASL_PLAINTEXT"
        safe_userinfo = f"{user}:***@" if password else f"{user}@"
    bootstrap = [host for host in hosts.split(",") if host]
    if not bootstrap:
        raise ConfigurationError(f"kafka://{safe_userinfo}{hosts} names no bootstrap server")
    for host in bootstrap:
        if not host.rpartition(":")[2].isdigit():
            raise ConfigurationError(f"Kafka bootstrap server {host!r} needs a port (host:9092)")
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _QUERY:
            raise ConfigurationError(
                f"unknown Kafka URL parameter {key!r} (known: {', '.join(sorted(_QUERY))}); "
                "pass other client options as KafkaTransport(client_options={...})"
            )
        options[key] = int(value) if key in _INTEGERS and value.isdigit() else value
    safe = f"kafka://{safe_userinfo}{','.join(bootstrap)}" + (f"?{query}" if query else "")
    return ParsedURL(bootstrap, options, safe)
