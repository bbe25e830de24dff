"""A consumer process for the Redis tests: ``python -m tests.redis_consumer URL PREFIX QUEUE OUT
[hang]``.

It consumes ``QUEUE`` (bound to ``work.*``) and appends ``<body> <attempt>`` to the file ``OUT``
for each message it handles. With ``hang``, it writes ``started <body>`` and never finishes a
message, so that a test can kill it mid-message.
"""

from __future__ import annotations

import asyncio
import sys

from fastapi_bus.core.messages import Message
from fastapi_bus.transports.base import Subscription
from fastapi_bus.transports.redis import RedisTransport


async def main(url: str, prefix: str, queue: str, out: str, hang: bool) -> None:
    transport = RedisTransport(url, prefix=prefix, claim_idle=1)
    await transport.start()

    def note(line: str) -> None:
        with open(out, "a") as file:
            file.write(line + "\n")

    async def handle(message: Message) -> None:
        body = message.body.decode()
        note(f"started {body}" if hang else f"{body} {message.attempt}")
        if hang:
            await asyncio.Event().wait()

    await transport.consume(Subscription(queue=queue, patterns=("work.*",), prefetch=4), handle)
    note("ready")
    await asyncio.Event().wait()


if __name__ == "__main__":
    url, prefix, queue, out, *rest = sys.argv[1:]
    asyncio.run(main(url, prefix, queue, out, hang=rest == ["hang"]))
