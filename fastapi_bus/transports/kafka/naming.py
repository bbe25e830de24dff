"""The topics and consumer groups the bus uses, and the regular expressions that subscribe a
queue's group to the topics of its event patterns.

Kafka topic names allow letters, digits, ``.``, ``_`` and ``-``; event names also allow ``:``,
so a word is escaped: ``_`` becomes ``__`` and ``:`` becomes ``_-`` (a one-to-one mapping).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Names", "escape"]


def escape(word: str) -> str:
    """``word`` (a part of an event or queue name) as legal Kafka topic characters."""
    return word.replace("_", "__").replace(":", "_-")


def _pattern_regex(pattern: str) -> str:
    """A regex for the escaped names that the topic ``pattern`` matches."""
    word = r"[^.]+"
    parts: list[str] = []
    for index, part in enumerate(pattern.split(".")):
        sep = r"\." if index else ""
        if part == "#":
            parts.append(rf"(?:{sep}{word})*" if index else rf"(?:{word}(?:\.{word})*)?")
        elif part == "*":
            parts.append(sep + word)
        else:
            parts.append(sep + re.escape(escape(part)))
    regex = "".join(parts)
    # A leading '#' that matched nothing must not leave a dangling separator.
    return regex.replace(rf"(?:{word}(?:\.{word})*)?\.", rf"(?:{word}\.)*", 1)


@dataclass(frozen=True)
class Names:
    """Topic and group names under one prefix (services that talk use the same prefix)."""

    prefix: str

    def event(self, name: str) -> str:
        """The topic of an event name: ``{prefix}.event.{name}``."""
        return f"{self.prefix}.event.{escape(name)}"

    def queue(self, queue: str) -> str:
        """The topic of one queue (retries, replays, dead letters): ``{prefix}.queue.{queue}``."""
        return f"{self.prefix}.queue.{escape(queue)}"

    @property
    def delays(self) -> str:
        """The topic of delayed messages, moved to their target when due."""
        return f"{self.prefix}.delays"

    def group(self, queue: str) -> str:
        """The consumer group of a queue: ``{prefix}.{queue}``."""
        return f"{self.prefix}.{queue}"

    def event_regex(self, patterns: tuple[str, ...]) -> str:
        """A regex for the event topics of ``patterns``."""
        head = re.escape(f"{self.prefix}.event.")
        return f"^{head}(?:{'|'.join(_pattern_regex(p) for p in patterns)})$"

    def subscription_regex(self, queue: str, patterns: tuple[str, ...]) -> str:
        """A regex for every topic a queue's group reads: its events' and its own."""
        own = re.escape(self.queue(queue))
        if not patterns:
            return f"^{own}$"
        return f"{self.event_regex(patterns)}|^{own}$"
