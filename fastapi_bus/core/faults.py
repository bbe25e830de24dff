"""The ``Fault`` event: published when a message is dead-lettered.

```python
@events.on(Fault)
async def alert(fault: Fault) -> None:
    await pager.send(f"{fault.handler} gave up on {fault.event} {fault.message_id}: {fault.reason}")
```
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

__all__ = ["FAULT_EVENT", "Fault"]

#: The event name faults are published under.
FAULT_EVENT = "Fault"


class Fault(BaseModel):
    """A message was dead-lettered: which, where, and why."""

    message_id: str = Field(description="Id of the dead-lettered message.")
    event: str = Field(description="Its event name.")
    service: str = Field(description="The service whose handler gave up.")
    handler: str = Field(description="The handler that gave up.")
    queue: str = Field(description="The handler's queue; its dead letters are in QUEUE.dlq.")
    reason: str = Field(description="Why the message was dead-lettered.")
    exception_type: str | None = Field(default=None, description="The exception's type.")
    exception_message: str | None = Field(default=None, description="The exception's text.")
    attempts: int = Field(description="Deliveries made before giving up.")
    failed_at: datetime = Field(description="When it was dead-lettered.")
    correlation_id: str | None = Field(default=None, description="Of the failed message.")
