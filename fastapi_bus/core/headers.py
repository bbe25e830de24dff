"""The ``x-bus-*`` headers fastapi-bus adds to messages, named once.

Dead-lettering adds the failure headers; replaying a dead letter removes them again and counts
the replay. Transports may carry ids in headers of their own (see each transport's mapping).
"""

from __future__ import annotations

__all__ = [
    "ATTEMPTS",
    "DEAD_LETTER_REASON",
    "EXCEPTION_MESSAGE",
    "EXCEPTION_TYPE",
    "FAILURE_HEADERS",
    "FIRST_FAILURE_AT",
    "HANDLER",
    "LAST_FAILURE_AT",
    "PREFIX",
    "QUEUE",
    "REPLAYED",
    "TRACEBACK",
]

PREFIX = "x-bus-"

#: Why the message was dead-lettered.
DEAD_LETTER_REASON = f"{PREFIX}dead-letter-reason"
#: The handler that gave up, and its queue.
HANDLER = f"{PREFIX}handler"
QUEUE = f"{PREFIX}queue"
#: Deliveries made before giving up.
ATTEMPTS = f"{PREFIX}attempts"
#: When the message first failed (kept across redeliveries) and when it last did.
FIRST_FAILURE_AT = f"{PREFIX}first-failure-at"
LAST_FAILURE_AT = f"{PREFIX}last-failure-at"
#: The exception that made it fail: dotted type name, text and formatted traceback.
EXCEPTION_TYPE = f"{PREFIX}exception-type"
EXCEPTION_MESSAGE = f"{PREFIX}exception-message"
TRACEBACK = f"{PREFIX}traceback"
#: How many times a dead letter has been replayed.
REPLAYED = f"{PREFIX}replayed"

#: The headers that describe a failure; a replayed message goes out without them.
FAILURE_HEADERS = frozenset(
    {
        DEAD_LETTER_REASON,
        HANDLER,
        QUEUE,
        ATTEMPTS,
        FIRST_FAILURE_AT,
        LAST_FAILURE_AT,
        EXCEPTION_TYPE,
        EXCEPTION_MESSAGE,
        TRACEBACK,
    }
)
