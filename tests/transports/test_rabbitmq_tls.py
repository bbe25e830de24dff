"""``amqps://`` for real: TLS to a proxy that terminates it in front of the test server.

The test RabbitMQ speaks plain AMQP, so these tests make a throwaway certificate authority and
a ``localhost`` certificate signed by it (with the ``openssl`` command), and run a TLS server on
a loopback port that forwards the decrypted bytes to RabbitMQ. The transport connects to that
port with an ``ssl.SSLContext`` that trusts the throwaway authority, and nothing else.
"""

from __future__ import annotations

import contextlib
import shutil
import ssl
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote, urlsplit

import anyio
import anyio.abc
import pytest
from anyio.streams.tls import TLSAttribute, TLSStream

from fastapi_bus.core.exceptions import TransportError
from fastapi_bus.core.messages import Message
from fastapi_bus.transports.base import Subscription
from fastapi_bus.transports.rabbitmq import RabbitMQTransport
from tests.certificates import HOST, Certificates, make_certificates
from tests.utils import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.rabbitmq]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    return make_certificates(tmp_path_factory.mktemp("tls"))


class TlsProxy:
    """Accepts TLS on a loopback port and forwards the decrypted bytes to ``upstream``.

    anyio does each handshake, so a client that rejects the certificate is an exception this
    handles (and counts), not an error the event loop reports.
    """

    def __init__(self, context: ssl.SSLContext, upstream: tuple[str, int]) -> None:
        self._context = context
        self._upstream = upstream
        self.port = 0
        #: The TLS version of each connection whose handshake succeeded.
        self.handshakes: list[str] = []
        #: How many handshakes failed.
        self.refused = 0

    async def handle(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            try:
                tls = await TLSStream.wrap(
                    client, server_side=True, ssl_context=self._context, standard_compatible=False
                )
            except (OSError, anyio.BrokenResourceError, anyio.EndOfStream):
                self.refused += 1
                return
            self.handshakes.append(tls.extra(TLSAttribute.tls_version))
            try:
                broker = await anyio.connect_tcp(*self._upstream)
            except OSError:
                return
            async with tls, broker, anyio.create_task_group() as pipes:
                pipes.start_soon(self._pipe, tls, broker, pipes.cancel_scope)
                pipes.start_soon(self._pipe, broker, tls, pipes.cancel_scope)

    @staticmethod
    async def _pipe(
        source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream, both: anyio.CancelScope
    ) -> None:
        with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            async for chunk in source:
                await sink.send(chunk)
        both.cancel()  # one side hung up: hang up on the other one too


def server_context(certificates: Certificates) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.server_cert, certificates.server_key)
    return context


@contextlib.asynccontextmanager
async def tls_proxy(certificates: Certificates, rabbitmq_url: str) -> AsyncIterator[TlsProxy]:
    """A :class:`TlsProxy` to ``rabbitmq_url``'s server, serving until the block ends."""
    broker = urlsplit(rabbitmq_url)
    proxy = TlsProxy(
        server_context(certificates), (broker.hostname or "127.0.0.1", broker.port or 5672)
    )
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as group:
        proxy.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        group.start_soon(listener.serve, proxy.handle)
        try:
            yield proxy
        finally:
            group.cancel_scope.cancel()


def amqps_url(rabbitmq_url: str, port: int, password: str | None = None) -> str:
    """``rabbitmq_url``'s credentials and virtual host, at ``amqps://localhost:<port>``."""
    broker = urlsplit(rabbitmq_url)
    user = quote(broker.username or "guest", safe="")
    secret = quote(password if password is not None else broker.password or "guest", safe="")
    return f"amqps://{user}:{secret}@{HOST}:{port}{broker.path or '/'}"


async def test_publish_and_consume_over_tls(certificates: Certificates, rabbitmq_url: str) -> None:
    client = ssl.create_default_context(cafile=str(certificates.ca))
    client.verify_flags |= ssl.VERIFY_X509_STRICT  # the default from Python 3.13 on
    exchange = f"test-tls-{uuid.uuid4().hex[:12]}"
    subscription = Subscription(queue=f"{exchange}.q", patterns=("tls.checked",))
    sent = Message(name="tls.checked", body=b'{"over": "tls"}')
    received: list[Message] = []

    async def consumer(message: Message) -> None:
        received.append(message)

    async with tls_proxy(certificates, rabbitmq_url) as proxy:
        transport = RabbitMQTransport(
            amqps_url(rabbitmq_url, proxy.port),
            ssl_context=client,
            exchange=exchange,
            auto_delete_topology=True,
            connect_timeout=10,
        )
        assert transport.url.startswith("amqps://")
        assert f":***@{HOST}:{proxy.port}/" in transport.url
        await transport.start()
        try:
            assert transport.connected
            await transport.declare(subscription)
            await transport.consume(subscription, consumer)
            await transport.publish(sent)
            await wait_until(lambda: len(received) == 1, what="the message sent over TLS")
        finally:
            await transport.close()
        # The connection went through the proxy, which only speaks TLS.
        assert proxy.handshakes
        assert all(version.startswith("TLS") for version in proxy.handshakes)
        assert proxy.refused == 0
    (message,) = received
    assert (message.id, message.name, message.body) == (sent.id, sent.name, sent.body)


async def test_a_server_the_context_does_not_trust_is_refused(
    certificates: Certificates, rabbitmq_url: str
) -> None:
    # The system's authorities, which never signed the throwaway certificate.
    untrusting = ssl.create_default_context()
    password = f"tls-secret-{uuid.uuid4().hex[:8]}"
    async with tls_proxy(certificates, rabbitmq_url) as proxy:
        transport = RabbitMQTransport(
            amqps_url(rabbitmq_url, proxy.port, password=password),
            ssl_context=untrusting,
            connect_timeout=600,  # a certificate that does not verify is not worth waiting for
        )
        with pytest.raises(TransportError, match="does not verify") as caught:
            await transport.start()
        assert not transport.connected
        await wait_until(lambda: proxy.refused > 0, what="the proxy to see the refusal")
        assert proxy.refused == 1, "no second try"
        assert proxy.handshakes == []
    text = str(caught.value)
    assert "certificate verify failed" in text.lower()
    assert password not in text
    assert f":***@{HOST}:{proxy.port}/" in text
