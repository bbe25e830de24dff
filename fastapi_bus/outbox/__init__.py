"""The transactional outbox: events written in the same database transaction as your data,
and sent by a relay once it has committed (``pip install "fastapi-bus[sqlalchemy]"``).

See ``docs/outbox.md``.
"""

from fastapi_bus.outbox.sqlalchemy import SQLAlchemyOutbox

__all__ = ["SQLAlchemyOutbox"]
