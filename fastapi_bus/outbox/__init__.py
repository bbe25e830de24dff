"""The transactional outbox and inbox on SQLAlchemy (``pip install "fastapi-bus[sqlalchemy]"``):
events written in the same database transaction as your data and sent by a relay once it has
committed, and handled messages recorded in the same transaction as the handler's work.

See ``docs/outbox.md``.
"""

from fastapi_bus.outbox.inbox import SQLAlchemyInbox
from fastapi_bus.outbox.sqlalchemy import SQLAlchemyOutbox

__all__ = ["SQLAlchemyInbox", "SQLAlchemyOutbox"]
