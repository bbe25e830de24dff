"""A throwaway certificate authority and a ``localhost`` server certificate for TLS tests, made
with the ``openssl`` command."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

#: The name the server certificate is issued to, and the host in the ``amqps://`` URLs.
HOST = "localhost"


@dataclasses.dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path


def _openssl(directory: Path, *args: str) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=directory, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"openssl {args[0]} failed: {result.stderr}"


#: Extensions for both certificates, with the key identifiers and key usages that strict
#: verification (the default from Python 3.13 on) asks for; nothing from the system's config.
OPENSSL_CONFIG = f"""\
[req]
distinguished_name = name
prompt = no

[name]
CN = {HOST}

[authority]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:{HOST}, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


def make_certificates(directory: Path) -> Certificates:
    """A throwaway certificate authority, and a certificate for ``localhost`` signed by it."""
    (directory / "openssl.cnf").write_text(OPENSSL_CONFIG)
    new_key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        directory,
        *("req", "-x509", "-config", "openssl.cnf", "-extensions", "authority", *new_key),
        *("-subj", "/CN=fastapi-bus throwaway test CA", "-days", "2"),
        *("-keyout", "ca.key", "-out", "ca.pem"),
    )
    _openssl(
        directory,
        *("req", "-new", "-config", "openssl.cnf", *new_key),
        *("-keyout", "server.key", "-out", "server.csr"),
    )
    _openssl(
        directory,
        *("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key"),
        *("-set_serial", "1", "-days", "2", "-extfile", "openssl.cnf", "-extensions", "server"),
        *("-out", "server.pem"),
    )
    return Certificates(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
    )
